namespace LibvirtStorage.Images.Qcow2;

internal static class Qcow2Creator
{
    public static void Create(string path, ImageCreateOptions options) => throw new NotImplementedException();
}
