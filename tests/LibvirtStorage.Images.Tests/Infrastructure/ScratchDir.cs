namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>A fresh folder under the system temp folder, deleted on dispose.</summary>
public sealed class ScratchDir : IDisposable
{
    public ScratchDir(string prefix = "lvstor-test")
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary>The full path of <paramref name="name"/> inside the folder.</summary>
    public string this[string name] => System.IO.Path.Combine(Path, name);

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

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
