namespace LibvirtStorage.Bench;

/// <summary>
/// Our side of the operation rows, behind a seam so the rows can exist before the engine's
/// LibvirtStorage.Images.Operations API is on main. Every call opens and closes what it needs, so its
/// wall clock compares with a whole qemu-img process.
/// </summary>
internal interface IEngineOperations
{
    /// <summary>Why the operations cannot run, or null when they can.</summary>
    string? Unavailable { get; }

    /// <summary>Copies a raw image into a new qcow2 (qemu-img convert -f raw -O qcow2), with O_DIRECT.</summary>
    void ConvertRawToQcow2(string sourcePath, string targetPath);

    /// <summary>Commits an overlay into its backing file (qemu-img commit), with O_DIRECT.</summary>
    void Commit(string overlayPath);

    /// <summary>Makes an overlay standalone by copying in its backing data (qemu-img rebase -b ''), with O_DIRECT.</summary>
    void Flatten(string overlayPath);
}

/// <summary>Stands in while the Operations API is not on main: every row reports n/a, never a number.</summary>
internal sealed class OperationsNotOnMain : IEngineOperations
{
    public string? Unavailable => "n/a (operations not on main yet)";

    public void ConvertRawToQcow2(string sourcePath, string targetPath) => throw new NotSupportedException(Unavailable);

    public void Commit(string overlayPath) => throw new NotSupportedException(Unavailable);

    public void Flatten(string overlayPath) => throw new NotSupportedException(Unavailable);
}
