using LibvirtStorage.Images;
using LibvirtStorage.Images.Operations;

namespace LibvirtStorage.Bench;

/// <summary>Our side of the operation rows through LibvirtStorage.Images.Operations, all with O_DIRECT.</summary>
internal sealed class EngineOperations : IEngineOperations
{
    public string? Unavailable => null;

    public void ConvertRawToQcow2(string sourcePath, string targetPath)
    {
        using IBlockImage source = ImageOpener.Open(sourcePath, new ImageOpenOptions { ReadOnly = true, Format = ImageFormat.Raw, Direct = true });
        ImageConvert.Run(source, targetPath, new ImageCreateOptions { Format = ImageFormat.Qcow2 }, new ImageConvertOptions { Direct = true });
    }

    public void Commit(string overlayPath) =>
        ImageCommit.Run(overlayPath, new ImageCommitOptions { Format = ImageFormat.Qcow2, Direct = true });

    public void Flatten(string overlayPath) =>
        ImageRebase.Run(overlayPath, newBacking: null, newBackingFormat: null, new ImageRebaseOptions { Format = ImageFormat.Qcow2, Direct = true });
}
