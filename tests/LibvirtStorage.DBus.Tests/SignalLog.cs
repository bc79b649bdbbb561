using System.Collections.Concurrent;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus.Tests;

/// <summary>Records every signal lvstord sends, through a raw match rule, so tests can wait for one.</summary>
public sealed class SignalLog : IDisposable
{
    private readonly ConcurrentQueue<Signal> _signals = new();
    private readonly SemaphoreSlim _arrived = new(0);
    private IDisposable? _subscription;

    public sealed record Signal(string Path, string Interface, string Member, string Object, Dictionary<string, VariantValue> Changed, string[] Strings);

    public static async Task<SignalLog> StartAsync(DBusConnection connection)
    {
        var log = new SignalLog();
        log._subscription = await connection.AddMatchAsync(new MatchRule { Type = MessageType.Signal, Sender = StorageBusServer.BusName },
            static (Message m, object? _) => Parse(m),
            (Notification<Signal> notification) =>
            {
                if (notification.HasValue)
                {
                    log._signals.Enqueue(notification.Value);
                    log._arrived.Release();
                }
            }, false, ObserverFlags.None, null);
        return log;
    }

    public IReadOnlyList<Signal> All => _signals.ToArray();

    /// <summary>Waits (30 s at most, so a missing signal fails rather than hangs) for a signal matching <paramref name="match"/>.</summary>
    public async Task<Signal> WaitAsync(Func<Signal, bool> match)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            if (_signals.FirstOrDefault(match) is { } found)
            {
                return found;
            }

            await _arrived.WaitAsync(timeout.Token);
        }
    }

    public void Dispose() => _subscription?.Dispose();

    private static Signal Parse(Message message)
    {
        string member = message.MemberAsString ?? "";
        Reader reader = message.GetBodyReader();
        string obj = "";
        var changed = new Dictionary<string, VariantValue>();
        string[] strings = [];
        switch (member)
        {
            case "InterfacesAdded":
            case "InterfacesRemoved":
                obj = reader.ReadObjectPathAsString();
                break;
            case "PropertiesChanged":
                obj = reader.ReadString();
                changed = reader.ReadDictionaryOfStringToVariantValue();
                break;
            case "Completed":
                strings = [reader.ReadString(), reader.ReadString(), reader.ReadString()];
                break;
        }

        return new Signal(message.PathAsString ?? "", message.InterfaceAsString ?? "", member, obj, changed, strings);
    }
}
