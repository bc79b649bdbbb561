using LibvirtStorage.Images;
using LibvirtStorage.Service;

namespace LibvirtStorage.VhostBlk;

/// <summary>
/// The command line of the standalone back-end, following QEMU <c>docs/interop/vhost-user.rst</c> "Backend program
/// conventions" (<c>--socket-path</c>, <c>--fd</c>, <c>--print-capabilities</c>; for vhost-user-blk
/// <c>--blk-file</c> and <c>--read-only</c>) plus our own options. Both <c>--opt value</c> and <c>--opt=value</c>.
/// </summary>
internal sealed record BackendOptions
{
    public const string Usage =
        "usage: lvstor-vhost-blk (--socket-path PATH | --fd N) --image FILE [--format raw|qcow2] [--read-only]\n" +
        "                        [--num-queues N] [--queue-threads N] [--parallel-requests N] [--serial S] [--direct]\n" +
        "                        [--writethrough] [--socket-mode OCTAL] [--allow-unsealed-memory] [--control-socket PATH]\n" +
        "       lvstor-vhost-blk --print-capabilities\n" +
        "  --blk-file FILE is accepted as a synonym of --image (vhost-user.rst).\n" +
        "  --queue-threads N (1..64): at most N threads serve the queues, queue i on thread i % N\n" +
        "                    (default: one thread per queue).";

    public string? SocketPath { get; init; }

    /// <summary>Where to listen for control commands (info, resize SIZE), or null for none.</summary>
    public string? ControlSocket { get; init; }

    public int? Fd { get; init; }

    public bool PrintCapabilities { get; init; }

    public string? Image { get; init; }

    public ImageFormat? Format { get; init; }

    public bool ReadOnly { get; init; }

    public ushort NumQueues { get; init; } = 1;

    /// <summary>At most this many queue threads (VhostUserBlkOptions.QueueThreads); 0 = one per queue.</summary>
    public int QueueThreads { get; init; }

    /// <summary>Requests of one queue served at once (VhostUserBlkOptions.ParallelRequestsPerQueue).</summary>
    public int ParallelRequests { get; init; } = LibvirtStorage.Vhost.VhostUserBlkOptions.DefaultParallelRequestsPerQueue;

    public string? Serial { get; init; }

    public bool Direct { get; init; }

    /// <summary>Map guest memory the front-end could truncate (see VhostUserBlkOptions.AllowUnsealedGuestMemory).</summary>
    public bool AllowUnsealedMemory { get; init; }

    /// <summary>Flush the image after each write before completing it, and offer no FLUSH (no volatile cache).</summary>
    public bool Writethrough { get; init; }

    public UnixFileMode SocketMode { get; init; } = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>The JSON of <c>--print-capabilities</c> (vhost-user.rst "vhost-user-blk").</summary>
    public const string Capabilities = "{\n  \"type\": \"block\",\n  \"features\": [\n    \"blk-file\",\n    \"read-only\"\n  ]\n}";

    /// <summary>Parses <paramref name="args"/>; on failure returns null and the reason in <paramref name="error"/>.</summary>
    public static BackendOptions? Parse(IReadOnlyList<string> args, out string? error)
    {
        var o = new BackendOptions();
        error = null;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            string? inline = null;
            int eq = arg.IndexOf('=', StringComparison.Ordinal);
            if (arg.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inline = arg[(eq + 1)..];
                arg = arg[..eq];
            }

            string? Value()
            {
                if (inline is not null)
                    return inline;
                if (i + 1 < args.Count)
                    return args[++i];
                return null;
            }

            switch (arg)
            {
                case "--print-capabilities":
                    o = o with { PrintCapabilities = true };
                    break;
                case "--read-only":
                    o = o with { ReadOnly = true };
                    break;
                case "--direct":
                    o = o with { Direct = true };
                    break;
                case "--allow-unsealed-memory":
                    o = o with { AllowUnsealedMemory = true };
                    break;
                case "--writethrough":
                    o = o with { Writethrough = true };
                    break;
                case "--socket-path":
                    o = o with { SocketPath = Value() ?? Missing(arg, ref error) };
                    break;
                case "--control-socket":
                    o = o with { ControlSocket = Value() ?? Missing(arg, ref error) };
                    break;
                case "--image" or "--blk-file":
                    o = o with { Image = Value() ?? Missing(arg, ref error) };
                    break;
                case "--serial":
                    o = o with { Serial = Value() ?? Missing(arg, ref error) };
                    break;
                case "--fd":
                    if (!int.TryParse(Value(), out int fd) || fd < 0)
                        error ??= "--fd needs a non-negative file descriptor number";
                    o = o with { Fd = fd };
                    break;
                case "--num-queues":
                    if (!ushort.TryParse(Value(), out ushort n) || n is < 1 or > 64)
                        error ??= "--num-queues needs a number in 1..64";
                    o = o with { NumQueues = n };
                    break;
                case "--queue-threads":
                    if (!int.TryParse(Value(), out int threads) || threads is < 1 or > 64)
                        error ??= "--queue-threads needs a number in 1..64";
                    o = o with { QueueThreads = threads };
                    break;
                case "--parallel-requests":
                    if (!int.TryParse(Value(), out int p) || p is < 1 or > 64)
                        error ??= "--parallel-requests needs a number in 1..64";
                    o = o with { ParallelRequests = p };
                    break;
                case "--format":
                    string? f = Value();
                    if (f is "raw")
                        o = o with { Format = ImageFormat.Raw };
                    else if (f is "qcow2")
                        o = o with { Format = ImageFormat.Qcow2 };
                    else
                        error ??= "--format is raw or qcow2";
                    break;
                case "--socket-mode":
                    try
                    {
                        o = o with { SocketMode = (UnixFileMode)Convert.ToInt32(Value() ?? "", 8) };
                    }
                    catch (Exception e) when (e is FormatException or ArgumentException or OverflowException)
                    {
                        error ??= "--socket-mode needs an octal mode such as 0660";
                    }

                    break;
                default:
                    error ??= $"unknown option {args[i]}";
                    break;
            }
        }

        if (error is null && !o.PrintCapabilities)
        {
            if ((o.SocketPath is null) == (o.Fd is null))
                error = "give exactly one of --socket-path and --fd";
            else if (o.Image is null)
                error = "--image is required";
            else if (o.Serial is { } s && (s.Length > ImageBlockDevice.SerialBytes || !System.Text.Ascii.IsValid(s)))
                error = $"--serial is at most {ImageBlockDevice.SerialBytes} ASCII characters";
        }

        return error is null ? o : null;
    }

    private static string? Missing(string option, ref string? error)
    {
        error ??= $"{option} needs a value";
        return null;
    }
}
