namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>A fresh directory under /tmp (or $TMPDIR), deleted with everything in it on dispose.</summary>
public sealed class TempDir : IDisposable
{
    /// <summary>Creates the directory.</summary>
    public TempDir()
    {
        Path = Directory.CreateTempSubdirectory("lvstor-test-").FullName;
    }

    /// <summary>Absolute path of the directory.</summary>
    public string Path { get; }

    /// <summary>Absolute path of <paramref name="name"/> inside the directory.</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>
    /// Deletes the directory recursively; failures are ignored. With LVSTOR_KEEP_SCRATCH=1 it is kept
    /// (and named on stderr) so a failing case's images can be inspected with qemu-img.
    /// </summary>
    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("LVSTOR_KEEP_SCRATCH") == "1")
        {
            Console.Error.WriteLine($"kept {Path}");
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
