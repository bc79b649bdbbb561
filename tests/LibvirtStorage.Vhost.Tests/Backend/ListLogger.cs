using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>Collects formatted log lines so tests can assert on the reasons the back-end gives.</summary>
internal sealed class ListLogger : ILogger
{
    private readonly List<string> _lines = [];

    public string Text
    {
        get
        {
            lock (_lines)
                return string.Join("\n", _lines);
        }
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_lines)
            _lines.Add(formatter(state, exception));
    }
}
