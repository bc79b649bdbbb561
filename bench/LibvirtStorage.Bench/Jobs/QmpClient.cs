using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace LibvirtStorage.Bench.Jobs;

/// <summary>
/// A minimal QMP client over a UNIX socket: one JSON object per line each way. Command replies are returned;
/// events that arrive meanwhile are queued for <see cref="WaitForJobEvent"/>.
/// </summary>
internal sealed class QmpClient : IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly Queue<JsonObject> _events = new();

    private QmpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new StreamReader(_stream, new UTF8Encoding(false));
    }

    /// <summary>Connects, reads the greeting and leaves capabilities negotiation mode (qmp_capabilities).</summary>
    public static QmpClient Connect(string socketPath, TimeSpan replyTimeout)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
        {
            ReceiveTimeout = (int)replyTimeout.TotalMilliseconds,
        };
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var client = new QmpClient(socket);
        JsonObject greeting = client.ReadMessage();
        if (greeting["QMP"] is null)
        {
            client.Dispose();
            throw new InvalidOperationException($"not a QMP greeting: {greeting.ToJsonString()}");
        }

        client.Execute("qmp_capabilities");
        return client;
    }

    /// <summary>Sends a command and returns its "return" value; a QMP error becomes an InvalidOperationException.</summary>
    public JsonNode? Execute(string command, JsonObject? arguments = null)
    {
        Send(command, arguments);
        return ReadReply(command);
    }

    /// <summary>Writes a command without waiting for its reply (the caller's clock starts here); read it with <see cref="ReadReply"/>.</summary>
    public void Send(string command, JsonObject? arguments = null)
    {
        var message = new JsonObject { ["execute"] = command };
        if (arguments is not null)
        {
            message["arguments"] = arguments;
        }

        byte[] bytes = Encoding.UTF8.GetBytes(message.ToJsonString() + "\n");
        _stream.Write(bytes);
    }

    /// <summary>Reads up to the reply of the command last sent, queueing events.</summary>
    public JsonNode? ReadReply(string command)
    {
        while (true)
        {
            JsonObject message = ReadMessage();
            if (message["event"] is not null)
            {
                _events.Enqueue(message);
                continue;
            }

            if (message["error"] is JsonObject error)
            {
                throw new InvalidOperationException($"QMP {command} failed: {error["class"]}: {error["desc"]}");
            }

            return message["return"];
        }
    }

    /// <summary>
    /// Waits for event <paramref name="name"/> of job <paramref name="jobId"/> (data.device) and returns its data.
    /// BLOCK_JOB_ERROR, or a BLOCK_JOB_COMPLETED with an error while waiting for something else, throws.
    /// </summary>
    public JsonObject WaitForJobEvent(string name, string jobId)
    {
        while (true)
        {
            JsonObject message = _events.Count > 0 ? _events.Dequeue() : ReadMessage();
            if (message["event"]?.GetValue<string>() is not { } eventName || message["data"] is not JsonObject data
                || data["device"]?.GetValue<string>() != jobId)
            {
                continue;
            }

            if (eventName == "BLOCK_JOB_ERROR" || (eventName == "BLOCK_JOB_COMPLETED" && data["error"] is not null))
            {
                throw new InvalidOperationException($"QSD job {jobId} failed: {data.ToJsonString()}");
            }

            if (eventName == name)
            {
                return data;
            }
        }
    }

    public void Dispose()
    {
        _reader.Dispose();
        _stream.Dispose();
        _socket.Dispose();
    }

    private JsonObject ReadMessage()
    {
        string line = _reader.ReadLine() ?? throw new IOException("qemu-storage-daemon closed the QMP connection");
        return JsonNode.Parse(line) as JsonObject ?? throw new InvalidOperationException($"not a QMP message: {line}");
    }
}
