using System.Globalization;

namespace LibvirtStorage.Images.Tests.Infrastructure;

/// <summary>
/// One guest operation, applicable to our engine, to the <see cref="DiskModel"/> and (where qemu-io has
/// the same command) to QEMU. Records print themselves, so a failing sequence reads as a repro.
/// </summary>
internal abstract record DiskOp
{
    public abstract void Apply(IBlockImage image);

    public abstract void Apply(DiskModel model);

    /// <summary>The qemu-io command doing the same, or null when qemu-io cannot express it.</summary>
    public virtual string? ToQemuIo() => null;

    protected static string I(long v) => v.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Writes a constant byte (qemu-io <c>write -P</c>) or the offset-dependent <see cref="Pattern"/> stream.</summary>
internal sealed record WriteOp(long Offset, int Length, uint Seed, bool Constant = false) : DiskOp
{
    public byte[] Data() => Pattern.WriteData(Seed, Offset, Length, Constant);

    public override void Apply(IBlockImage image) => image.Write(Offset, Data());

    public override void Apply(DiskModel model) => model.Write(Offset, Data());

    public override string? ToQemuIo() => Constant ? $"write -P 0x{Pattern.ConstantFor(Seed):x2} {I(Offset)} {I(Length)}" : null;
}

internal sealed record ZeroOp(long Offset, long Length, bool Unmap) : DiskOp
{
    public override void Apply(IBlockImage image) => image.WriteZeroes(Offset, Length, Unmap);

    public override void Apply(DiskModel model) => model.WriteZeroes(Offset, Length);

    public override string? ToQemuIo() => $"write -z{(Unmap ? " -u" : "")} {I(Offset)} {I(Length)}";
}

internal sealed record DiscardOp(long Offset, long Length) : DiskOp
{
    public override void Apply(IBlockImage image) => image.Discard(Offset, Length);

    public override void Apply(DiskModel model) => model.Discard(Offset, Length);

    public override string? ToQemuIo() => $"discard {I(Offset)} {I(Length)}";
}

internal sealed record ResizeOp(long NewSize) : DiskOp
{
    public override void Apply(IBlockImage image) => image.Resize(NewSize);

    public override void Apply(DiskModel model) => model.Resize(NewSize);
}

internal sealed record FlushOp : DiskOp
{
    public override void Apply(IBlockImage image) => image.Flush();

    public override void Apply(DiskModel model)
    {
    }

    public override string? ToQemuIo() => "flush";
}

/// <summary>Closes the image and opens it again (handled by <see cref="EngineSession"/>).</summary>
internal sealed record ReopenOp : DiskOp
{
    public override void Apply(IBlockImage image) =>
        throw new InvalidOperationException("reopen is applied by EngineSession");

    public override void Apply(DiskModel model)
    {
    }
}

/// <summary>An image opened read-write through our engine, with the model that follows it.</summary>
internal sealed class EngineSession : IDisposable
{
    private readonly ImageOpenOptions _options;

    public EngineSession(string path, DiskModel model, ImageOpenOptions? options = null)
    {
        Path = path;
        Model = model;
        _options = options ?? new ImageOpenOptions();
        Image = ImageOpener.Open(path, _options);
    }

    public string Path { get; }

    public DiskModel Model { get; }

    public IBlockImage Image { get; private set; }

    public List<DiskOp> History { get; } = [];

    public void Apply(DiskOp op)
    {
        History.Add(op);
        if (op is ReopenOp)
        {
            Image.Dispose();
            Image = ImageOpener.Open(Path, _options);
            return;
        }

        op.Apply(Image);
        op.Apply(Model);
    }

    public void ApplyAll(IEnumerable<DiskOp> ops)
    {
        foreach (DiskOp op in ops)
        {
            Apply(op);
        }
    }

    public string Describe() => string.Join("\n  ", History);

    public void Dispose() => Image.Dispose();
}
