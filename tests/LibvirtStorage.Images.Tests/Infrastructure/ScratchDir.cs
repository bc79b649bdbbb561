namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>A <see cref="TempDir"/> with short names for its files and sparse copies of them.</summary>
public sealed class ScratchDir : IDisposable
{
    private readonly TempDir _dir = new();

    public string Path => _dir.Path;

    /// <summary>The full path of <paramref name="name"/> inside the folder.</summary>
    public string this[string name] => _dir.File(name);

    /// <summary>Copies the named files, holes included, into a new folder (for doing one operation two ways).</summary>
    public ScratchDir CopyOf(params string[] names)
    {
        var copy = new ScratchDir();
        foreach (string name in names)
        {
            // cp keeps holes (File.Copy may not), so maps and actual sizes of the copies stay comparable.
            ProcessRunner.Run("cp", ["--sparse=always", this[name], copy[name]]).Expect();
        }

        return copy;
    }

    public void Dispose() => _dir.Dispose();
}
