namespace LibvirtStorage.Bench;

/// <summary>
/// Our side of the operation rows, behind a seam (the rows were written before the engine's
/// LibvirtStorage.Images.Operations API reached main; a stand-in can report "n/a" through
/// <see cref="Unavailable"/> instead of a number). Every call opens and closes what it needs, so its
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
