using LibvirtStorage.Images;
using LibvirtStorage.Service;
using LibvirtStorage.Vhost;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.VhostBlk;

/// <summary>
/// lvstor-vhost-blk: a standalone vhost-user-blk back-end serving one image (QEMU <c>docs/interop/vhost-user.rst</c>,
/// "Backend program conventions"). With <c>--socket-path</c> it serves front-ends one after another until SIGINT or
/// SIGTERM; with <c>--fd</c> it serves that connection and exits when it ends.
/// </summary>
/// <remarks>Exit codes: 0 done, 1 runtime failure (image, socket), 2 bad command line.</remarks>
internal static class Program
{
    public const int ExitOk = 0;
    public const int ExitFailure = 1;
    public const int ExitUsage = 2;

    public static async Task<int> Main(string[] args)
    {
        BackendOptions? options = BackendOptions.Parse(args, out string? error);
        if (options is null)
        {
            await Console.Error.WriteLineAsync($"lvstor-vhost-blk: {error}\n{BackendOptions.Usage}").ConfigureAwait(false);
            return ExitUsage;
        }

        if (options.PrintCapabilities)
        {
            Console.WriteLine(BackendOptions.Capabilities);
            return ExitOk;
        }

        using ILoggerFactory loggers = LoggerFactory.Create(b => b
            .AddSimpleConsole(c => { c.SingleLine = true; c.TimestampFormat = "HH:mm:ss.fff "; })
            .AddFilter(null, LogLevel.Information)
            .AddConsole(c => c.LogToStandardErrorThreshold = LogLevel.Trace));
        ILogger log = loggers.CreateLogger("lvstor-vhost-blk");
        try
        {
            return await RunAsync(options, log).ConfigureAwait(false);
        }
        catch (Exception e) when (e is LibvirtStorageException or IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException
                                      or System.Net.Sockets.SocketException or PlatformNotSupportedException)
        {
            log.LogError("{Message}", e.Message);
            return ExitFailure;
        }
    }

    private static async Task<int> RunAsync(BackendOptions options, ILogger log)
    {
        var openOptions = new ImageOpenOptions { ReadOnly = options.ReadOnly, Format = options.Format, Direct = options.Direct };
        using IBlockImage image = ImageOpener.Open(options.Image!, openOptions);
        var device = new ImageBlockDevice(image, options.Serial);
        log.LogInformation("image {Image} ({Format}, {Size} bytes, {Mode}, {Cache}), serial \"{Serial}\", {Queues} queue(s), {Parallel} request(s) at once per queue",
            image.Path, image.Format, image.VirtualSize, image.IsReadOnly ? "read-only" : "read-write",
            options.Writethrough ? "write-through" : "writeback", device.Serial, options.NumQueues, options.ParallelRequests);
        var serverOptions = new VhostUserBlkOptions
        {
            NumQueues = options.NumQueues, ParallelRequestsPerQueue = options.ParallelRequests, SocketMode = options.SocketMode,
            Writethrough = options.Writethrough, AllowUnsealedGuestMemory = options.AllowUnsealedMemory, QueueThreads = options.QueueThreads,
        };
        await using VhostUserBlkServer server = options.SocketPath is { } path
            ? VhostUserBlkServer.Listen(path, device, serverOptions, log)
            : VhostUserBlkServer.FromConnectedFd(options.Fd!.Value, device, serverOptions, log);

        using var stop = new CancellationTokenSource();
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        server.Start();
        await using ControlSocket? control = options.ControlSocket is { } controlPath
            ? ControlSocket.Start(controlPath, device, server, log)
            : null;
        try
        {
            await server.Completion.WaitAsync(stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            log.LogInformation("signal received, stopping");
        }

        if (control is not null)
            await control.DisposeAsync().ConfigureAwait(false); // no resize may run while the image is flushed and closed
        await server.StopAsync().ConfigureAwait(false);
        if (!image.IsReadOnly)
            image.Flush();
        log.LogInformation("stopped after {Count} front-end connection(s)", server.ConnectionCount);
        return ExitOk;
    }
}
