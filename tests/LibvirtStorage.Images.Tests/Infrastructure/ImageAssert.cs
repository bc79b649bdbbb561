using System.Globalization;
using Xunit;
using Xunit.Sdk;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>Assertions that look at an image through our engine and through QEMU's tools.</summary>
internal static class ImageAssert
{
    /// <summary>Reads the whole virtual disk through our engine, 1 MiB at a time.</summary>
    public static byte[] ReadAll(IBlockImage image)
    {
        byte[] all = new byte[image.VirtualSize];
        const int step = 1 << 20;
        for (long pos = 0; pos < all.Length; pos += step)
        {
            int n = (int)Math.Min(step, all.Length - pos);
            image.Read(pos, all.AsSpan((int)pos, n));
        }

        return all;
    }

    /// <summary>Reads the image (and its chain) read-only through our engine.</summary>
    public static byte[] ReadAllWithEngine(string path, ImageOpenOptions? options = null)
    {
        using IBlockImage image = ImageOpener.Open(path, (options ?? new ImageOpenOptions()) with { ReadOnly = true });
        return ReadAll(image);
    }

    public static void BytesEqual(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual, string what)
    {
        if (expected.Length != actual.Length)
        {
            throw new XunitException($"{what}: length {actual.Length}, expected {expected.Length}");
        }

        int first = expected.CommonPrefixLength(actual);
        if (first == expected.Length)
        {
            return;
        }

        int count = 0;
        for (int i = first; i < expected.Length; i++)
        {
            count += expected[i] != actual[i] ? 1 : 0;
        }

        int show = Math.Min(16, expected.Length - first);
        throw new XunitException(string.Create(CultureInfo.InvariantCulture,
            $"{what}: {count} bytes differ; first at offset 0x{first:x}: expected {Convert.ToHexString(expected.Slice(first, show))}, actual {Convert.ToHexString(actual.Slice(first, show))}"));
    }

    /// <summary>qemu-img check reports no corruption and no leak.</summary>
    public static void QemuCheckClean(string path, string context = "")
    {
        QemuCheckReport r = Qemu.Check(path);
        Assert.True(r.IsClean, $"qemu-img check {path} is not clean {context}\n{r.Json}");
    }

    /// <summary>
    /// QEMU reads what the model says: qemu-img convert -O raw compared byte for byte (don't-care bytes
    /// skipped), qemu-io read -P over every constant run, and qemu-img compare against a raw image of
    /// the model when no byte is "don't care".
    /// </summary>
    public static void QemuMatchesModel(string path, string format, DiskModel model, string scratch, string context = "")
    {
        byte[] view = Qemu.ReadAll(path, format, scratch);
        model.AssertMatches(view, 0, $"QEMU's view of {Path.GetFileName(path)} {context}");

        List<(long Offset, long Length, byte Value)> runs = model.ConstantRuns();
        if (runs.Count > 0)
        {
            Qemu.Io(path, format, runs.Select(r => string.Create(CultureInfo.InvariantCulture, $"read -P 0x{r.Value:x2} {r.Offset} {r.Length}")), readOnly: true);
        }

        if (!model.HasDontCare)
        {
            string raw = Path.Combine(scratch, $"model-{Guid.NewGuid():N}.raw");
            model.SaveRaw(raw);
            bool same = Qemu.Compare(raw, "raw", path, format, out string output);
            File.Delete(raw);
            Assert.True(same, $"qemu-img compare model vs {path} {context}: {output}");
        }
    }

    /// <summary>Our engine reads what the model says.</summary>
    public static void EngineMatchesModel(string path, DiskModel model, string context = "", ImageOpenOptions? options = null)
    {
        byte[] view = ReadAllWithEngine(path, options);
        model.AssertMatches(view, 0, $"engine's view of {Path.GetFileName(path)} {context}");
    }
}
