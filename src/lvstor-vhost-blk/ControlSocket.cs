using System.Buffers;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using LibvirtStorage.Service;
using LibvirtStorage.Vhost;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.VhostBlk;

/// <summary>
/// <c>--control-socket PATH</c>: a UNIX stream socket (mode 0600) on which the running back-end takes one-line
/// commands and answers each with one line of JSON. Until lvstord drives live resize over D-Bus, this is how a
/// test or an operator grows the export (QEMU's storage daemon does the same over QMP <c>block_resize</c>).
/// </summary>
/// <remarks>
/// <para>Commands (ASCII, one per line, <c>\n</c> or <c>\r\n</c>; a last line without newline is run at end of
/// stream):</para>
/// <list type="bullet">
/// <item><c>info</c> → <c>{"ok":true,"capacity":N,"read_only":B,"frontend":B,"connections":N}</c></item>
/// <item><c>resize SIZE</c> (bytes, or with a K/M/G/T suffix, binary) → grows the image, then notifies the
/// front-end: <c>{"ok":true,"capacity":N,"notified":"Acknowledged"}</c> (see <see cref="ConfigChangeNotification"/>)</item>
/// </list>
/// <para>Anything else, a line longer than <see cref="MaxLineBytes"/>, a client beyond <see cref="MaxClients"/>
/// or one idle for <see cref="IdleTimeout"/> gets <c>{"ok":false,"error":"..."}</c> (the last three are then
/// disconnected); nothing a client sends can end the back-end. Commands run one at a time.</para>
/// </remarks>
internal sealed class ControlSocket : IAsyncDisposable
{
    public const int MaxLineBytes = 256;
    public const int MaxClients = 8;
    public static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(30);

    private readonly Socket _listener;
    private readonly ImageBlockDevice _device;
    private readonly VhostUserBlkServer _server;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _commands = new(1, 1);
    private readonly Lock _clientsGate = new();
    private readonly List<Task> _clients = [];
    private Task? _loop;
    private int _disposed;

    private ControlSocket(Socket listener, string path, ImageBlockDevice device, VhostUserBlkServer server, ILogger log)
    {
        _listener = listener;
        Path = path;
        _device = device;
        _server = server;
        _log = log;
    }

    public string Path { get; }

    /// <summary>Creates the socket at <paramref name="path"/> (a stale socket nobody answers on is replaced) and starts accepting.</summary>
    public static ControlSocket Start(string path, ImageBlockDevice device, VhostUserBlkServer server, ILogger log)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("the control socket needs Linux");
        RemoveStaleSocket(path);
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite); // before listen: nobody connects earlier
            listener.Listen(MaxClients);
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        var control = new ControlSocket(listener, path, device, server, log);
        control._loop = Task.Run(control.AcceptLoopAsync);
        log.LogInformation("control socket {Path} (commands: info, resize SIZE)", path);
        return control;
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (SocketException e)
            {
                _log.LogWarning("control socket {Path}: accept failed: {Message}", Path, e.Message);
                await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            lock (_clientsGate)
            {
                _clients.RemoveAll(t => t.IsCompleted);
                if (_clients.Count >= MaxClients)
                {
                    _ = RefuseAsync(client);
                    continue;
                }

                _clients.Add(Task.Run(() => ServeClientAsync(client)));
            }
        }
    }

    private static async Task RefuseAsync(Socket client)
    {
        using (client)
        {
            try
            {
                await client.SendAsync(Error($"too many control clients (at most {MaxClients})"), SocketFlags.None).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                // It left already.
            }
        }
    }

    private async Task ServeClientAsync(Socket client)
    {
        using var _ = client;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxLineBytes + 1);
        try
        {
            int filled = 0;
            while (true)
            {
                int newline = Array.IndexOf(buffer, (byte)'\n', 0, filled);
                if (newline >= 0)
                {
                    await ReplyAsync(client, buffer.AsMemory(0, newline)).ConfigureAwait(false);
                    Buffer.BlockCopy(buffer, newline + 1, buffer, 0, filled - newline - 1);
                    filled -= newline + 1;
                    continue;
                }

                if (filled > MaxLineBytes)
                {
                    await client.SendAsync(Error($"line longer than {MaxLineBytes} bytes"), SocketFlags.None).ConfigureAwait(false);
                    return;
                }

                using var idle = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                idle.CancelAfter(IdleTimeout);
                int n;
                try
                {
                    n = await client.ReceiveAsync(buffer.AsMemory(filled, MaxLineBytes + 1 - filled), SocketFlags.None, idle.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
                {
                    await client.SendAsync(Error($"idle for {IdleTimeout.TotalSeconds:0} s"), SocketFlags.None).ConfigureAwait(false);
                    return;
                }

                if (n == 0)
                {
                    if (filled > 0)
                        await ReplyAsync(client, buffer.AsMemory(0, filled)).ConfigureAwait(false);
                    return;
                }

                filled += n;
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away or we are stopping: nothing to answer.
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task ReplyAsync(Socket client, ReadOnlyMemory<byte> line)
    {
        string command = Encoding.UTF8.GetString(line.Span).TrimEnd('\r').Trim();
        await _commands.WaitAsync(_stop.Token).ConfigureAwait(false);
        byte[] reply;
        try
        {
            // Resizing writes metadata and waits for the front-end's ack: keep it off the accept loop's thread.
            reply = await Task.Run(() => Execute(command)).ConfigureAwait(false);
        }
        finally
        {
            _commands.Release();
        }

        await client.SendAsync(reply, SocketFlags.None).ConfigureAwait(false);
    }

    /// <summary>Runs one command line and returns its JSON answer line.</summary>
    internal byte[] Execute(string command)
    {
        string[] words = command.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        switch (words)
        {
            case ["info"]:
                return Json(w =>
                {
                    w.WriteBoolean("ok", true);
                    w.WriteNumber("capacity", _device.Capacity);
                    w.WriteBoolean("read_only", _device.IsReadOnly);
                    w.WriteBoolean("frontend", _server.IsServing);
                    w.WriteNumber("connections", _server.ConnectionCount);
                });
            case ["resize", string size]:
                if (!TryParseSize(size, out long bytes))
                    return Error($"bad size '{size}' (bytes, or a number with K, M, G or T)");
                try
                {
                    _device.Grow(bytes);
                    ConfigChangeNotification notified = _server.NotifyCapacityChanged();
                    _log.LogInformation("control: resized to {Capacity} bytes, front-end {Notified}", _device.Capacity, notified);
                    return Json(w =>
                    {
                        w.WriteBoolean("ok", true);
                        w.WriteNumber("capacity", _device.Capacity);
                        w.WriteString("notified", notified.ToString());
                    });
                }
                catch (Exception e) when (e is LibvirtStorage.Images.LibvirtStorageException or IOException or InvalidOperationException or UnauthorizedAccessException)
                {
                    _log.LogWarning("control: resize {Size} refused: {Message}", size, e.Message);
                    return Error(e.Message);
                }
            case ["resize"] or ["resize", _, ..]:
                return Error("usage: resize SIZE");
            case []:
                return Error("empty command (commands: info, resize SIZE)");
            default:
                return Error($"unknown command '{words[0]}' (commands: info, resize SIZE)");
        }
    }

    /// <summary>Bytes, or a number with a binary K/M/G/T suffix (case-insensitive); false on garbage or overflow.</summary>
    internal static bool TryParseSize(string text, out long bytes)
    {
        bytes = 0;
        if (text.Length == 0)
            return false;
        int shift = char.ToUpperInvariant(text[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, _ => 0 };
        string digits = shift == 0 ? text : text[..^1];
        if (digits.Length == 0 || !digits.All(char.IsAsciiDigit)
            || !long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long value) || value > long.MaxValue >> shift)
            return false;
        bytes = value << shift;
        return true;
    }

    private static byte[] Error(string message) => Json(w =>
    {
        w.WriteBoolean("ok", false);
        w.WriteString("error", message);
    });

    private static byte[] Json(Action<Utf8JsonWriter> body)
    {
        var output = new ArrayBufferWriter<byte>(128);
        using (var writer = new Utf8JsonWriter(output))
        {
            writer.WriteStartObject();
            body(writer);
            writer.WriteEndObject();
        }

        output.Write("\n"u8);
        return output.WrittenSpan.ToArray();
    }

    private static void RemoveStaleSocket(string path)
    {
        if (!File.Exists(path))
            return;
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            // Nobody listens. A regular file refuses too, but unlike a socket it can be opened: never delete one.
            try
            {
                using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            }
            catch (IOException)
            {
                File.Delete(path);
                return;
            }

            throw new IOException($"{path} exists and is not a socket", e);
        }

        throw new IOException($"{path} is a live socket: another process serves it");
    }

    /// <summary>Stops accepting, ends every client and removes the socket.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
        Task[] clients;
        lock (_clientsGate)
            clients = [.. _clients];
        await Task.WhenAll(clients).ConfigureAwait(false);
        try
        {
            File.Delete(Path);
        }
        catch (IOException)
        {
            // Gone already.
        }

        _stop.Dispose();
        _commands.Dispose();
    }
}
