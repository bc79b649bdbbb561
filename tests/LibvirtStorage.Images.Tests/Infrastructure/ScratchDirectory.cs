namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>
/// A fresh directory under the system temp folder, removed on dispose unless LVSTOR_KEEP_SCRATCH=1
/// (then its path is printed so a failing case's images can be inspected with qemu-img).
/// </summary>
internal sealed class ScratchDirectory : IDisposable
{
    public ScratchDirectory(string? tag = null)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"lvstor-{tag ?? "test"}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary>A path for a file named <paramref name="name"/> in this directory.</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("LVSTOR_KEEP_SCRATCH") == "1")
        {
            Console.Error.WriteLine($"kept scratch directory {Path}");
            return;
        }

        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
