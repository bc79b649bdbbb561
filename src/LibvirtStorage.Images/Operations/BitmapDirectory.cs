using LibvirtStorage.Images.Qcow2;

namespace LibvirtStorage.Images.Operations;

/// <summary>One persistent dirty bitmap of a qcow2 image, as <c>qemu-img info</c> lists it.</summary>
/// <param name="Name">The bitmap's name.</param>
/// <param name="Granularity">Bytes of guest disk per bit.</param>
/// <param name="Flags">"in-use" and/or "auto", in that order.</param>
public sealed record BitmapInfo(string Name, long Granularity, IReadOnlyList<string> Flags);

/// <summary>Lists the persistent bitmaps of a qcow2 image for <see cref="ImageInfo"/> (qcow2.txt "Bitmaps extension").</summary>
internal static class BitmapDirectory
{
    public static IReadOnlyList<BitmapInfo>? Read(Qcow2Image image)
    {
        Qcow2Bitmaps? bitmaps = image.ReadBitmaps();
        if (bitmaps is null)
        {
            return null; // none, or QEMU ignores a bitmaps extension whose autoclear bit was cleared
        }

        var list = new List<BitmapInfo>(bitmaps.Entries.Count);
        foreach (Qcow2BitmapEntry e in bitmaps.Entries)
        {
            var flags = new List<string>(2);
            if ((e.Flags & Qcow2BitmapEntry.InUse) != 0)
            {
                flags.Add("in-use");
            }

            if ((e.Flags & Qcow2BitmapEntry.Auto) != 0)
            {
                flags.Add("auto");
            }

            list.Add(new BitmapInfo(e.Name, 1L << e.GranularityBits, flags));
        }

        return list;
    }
}
