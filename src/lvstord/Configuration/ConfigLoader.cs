using System.Globalization;
using System.Text.RegularExpressions;
using LibvirtStorage.Service;
using Microsoft.Extensions.Logging;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace LibvirtStorage.Daemon.Configuration;

/// <summary>
/// Reads lvstord's YAML configuration (snake_case keys) into a validated <see cref="DaemonConfig"/>. Every
/// error is a <see cref="ConfigException"/> whose message starts with <c>file:line:column: key.path:</c>.
/// </summary>
/// <remarks>
/// The YAML is read through YamlDotNet's representation model rather than its object deserializer because
/// the nodes keep their positions: every message, including those of semantic checks (modes, accounts,
/// paths, pool names), can then name the line and the key path.
/// </remarks>
internal static partial class ConfigLoader
{
    /// <summary>The configuration file used when none is given and it exists.</summary>
    public const string DefaultPath = "/etc/lvstor/lvstord.yaml";

    /// <summary>The source name of the built-in configuration in messages.</summary>
    public const string EmbeddedDefaultName = "(embedded default lvstord.yaml)";

    private const long MaxCacheBytes = 1L << 30;
    private const long MinCacheBytes = 64L << 10;

    private static readonly string[] TopLevelKeys =
        ["bus", "state_directory", "runtime_directory", "admin_groups", "sockets", "io", "cache", "jobs", "pools", "logging"];

    private static readonly Dictionary<string, LogLevel> Levels = new(StringComparer.Ordinal)
    {
        ["trace"] = LogLevel.Trace,
        ["debug"] = LogLevel.Debug,
        ["information"] = LogLevel.Information,
        ["warning"] = LogLevel.Warning,
        ["error"] = LogLevel.Error,
        ["critical"] = LogLevel.Critical,
        ["none"] = LogLevel.None,
    };

    private static readonly Dictionary<string, LogFormat> Formats = new(StringComparer.Ordinal)
    {
        ["systemd"] = LogFormat.Systemd,
        ["simple"] = LogFormat.Simple,
        ["json"] = LogFormat.Json,
    };

    /// <summary>The built-in configuration (packaging/lvstord.yaml, embedded at build time).</summary>
    public static string EmbeddedDefaultText { get; } = ReadEmbeddedDefault();

    /// <summary>
    /// Loads <paramref name="path"/>; with null, <see cref="DefaultPath"/> when it exists, else the embedded default.
    /// </summary>
    public static DaemonConfig Load(string? path, ConfigOverrides overrides)
    {
        if (path is null && !File.Exists(DefaultPath))
        {
            return Parse(EmbeddedDefaultText, EmbeddedDefaultName, overrides);
        }

        path ??= DefaultPath;
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"{path}: cannot read the configuration file: {e.Message}");
        }

        return Parse(text, path, overrides);
    }

    /// <summary>Parses and validates <paramref name="text"/>; <paramref name="source"/> names it in messages.</summary>
    public static DaemonConfig Parse(string text, string source, ConfigOverrides? overrides = null)
    {
        overrides ??= ConfigOverrides.None;
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw YamlSection.At(source, e.Start, "", "invalid YAML: " + StripMark(e));
        }

        if (stream.Documents.Count > 1)
        {
            throw YamlSection.At(source, stream.Documents[1].RootNode.Start, "", "expected one YAML document, found several");
        }

        YamlNode rootNode = stream.Documents.Count == 0 ? new YamlScalarNode(null) : stream.Documents[0].RootNode;
        YamlSection root = YamlSection.Open(source, "", rootNode, TopLevelKeys);
        var defaults = new DaemonConfig();

        string bus = overrides.Bus ?? root.String("bus", defaults.Bus);
        if (overrides.Bus is null && !IsBusAddress(bus))
        {
            throw root.Error(root.Find("bus")!, "bus", $"expected system, session or a D-Bus address such as unix:path=/run/dbus/system_bus_socket, got \"{bus}\"");
        }

        string stateDirectory = overrides.StateDirectory ?? AbsolutePath(root, "state_directory", defaults.StateDirectory);
        string runtimeDirectory = overrides.RuntimeDirectory ?? AbsolutePath(root, "runtime_directory", defaults.RuntimeDirectory);

        return defaults with
        {
            Source = source,
            Bus = bus,
            StateDirectory = stateDirectory,
            RuntimeDirectory = runtimeDirectory,
            AdminGroups = AdminGroups(root),
            Sockets = Sockets(root.Section("sockets", "user", "group", "mode", "directory_mode")),
            Io = Io(root.Section("io", "queues", "queue_size", "parallel_requests", "queue_threads", "writethrough", "direct")),
            Cache = Cache(root.Section("cache", "l2_size", "refcount_size")),
            Jobs = new JobsConfig
            {
                Retention = TimeSpan.FromSeconds(root.Section("jobs", "retention_seconds").Integer("retention_seconds", 0, 86_400, 60)),
            },
            Pools = Pools(root, stateDirectory, runtimeDirectory),
            Logging = Logging(root.Section("logging", "level", "format")),
        };
    }

    /// <summary>True for <c>system</c>, <c>session</c> and anything shaped like a D-Bus address (<c>transport:key=value</c>).</summary>
    public static bool IsBusAddress(string bus) =>
        bus is "system" or "session" || (bus.IndexOf(':', StringComparison.Ordinal) > 0 && !bus.Any(char.IsWhiteSpace));

    private static IReadOnlyList<string> AdminGroups(YamlSection root)
    {
        IReadOnlyList<string> groups = root.StringList("admin_groups", new DaemonConfig().AdminGroups);
        for (int i = 0; i < groups.Count; i++)
        {
            if (groups[i].Length == 0 || groups[i].Any(c => char.IsWhiteSpace(c) || c == ':'))
            {
                var node = (YamlSequenceNode)root.Find("admin_groups")!;
                throw root.Error(node.Children[i], $"admin_groups[{i}]", $"\"{groups[i]}\" is not a group name");
            }
        }

        return groups;
    }

    private static SocketConfig Sockets(YamlSection s)
    {
        var defaults = new SocketConfig();
        string user = s.String("user", defaults.User);
        uint uid = UnixAccounts.FindUserId(user)
            ?? throw s.Error(s.Find("user") ?? s.Node, s.PathOf("user"), $"no user named \"{user}\" on this system; create it or name another");
        string group = s.String("group", defaults.Group);
        uint gid = UnixAccounts.FindGroupId(group)
            ?? throw s.Error(s.Find("group") ?? s.Node, s.PathOf("group"), $"no group named \"{group}\" on this system; create it or name another");
        return new SocketConfig
        {
            User = user,
            Group = group,
            Uid = uid,
            Gid = gid,
            Mode = Mode(s, "mode", defaults.Mode),
            DirectoryMode = Mode(s, "directory_mode", defaults.DirectoryMode),
        };
    }

    private static UnixFileMode Mode(YamlSection s, string key, UnixFileMode fallback)
    {
        if (s.Find(key) is not { } node)
        {
            return fallback;
        }

        // Read as text, so an unquoted 0660 means octal here, not YAML 1.1's integer 432.
        string text = s.ScalarText(node, s.PathOf(key), "an octal mode such as \"0660\"");
        if (text.Length is < 3 or > 4 || !text.All(c => c is >= '0' and <= '7'))
        {
            throw s.Error(node, s.PathOf(key), $"expected an octal mode such as \"0660\" (permission bits only), got \"{text}\"");
        }

        int mode = Convert.ToInt32(text, 8);
        return mode <= 0x1FF
            ? (UnixFileMode)mode
            : throw s.Error(node, s.PathOf(key), $"setuid, setgid and sticky bits are not allowed, got \"{text}\"");
    }

    private static IoConfig Io(YamlSection s)
    {
        var defaults = new IoConfig();
        int queueSize = s.Integer("queue_size", 1, 32768, defaults.QueueSize);
        if ((queueSize & (queueSize - 1)) != 0)
        {
            throw s.Error(s.Find("queue_size")!, s.PathOf("queue_size"), $"expected a power of two from 1 to 32768, got \"{queueSize}\"");
        }

        return new IoConfig
        {
            Queues = s.Integer("queues", 1, 64, defaults.Queues),
            QueueSize = queueSize,
            ParallelRequests = s.Integer("parallel_requests", 1, 64, defaults.ParallelRequests),
            QueueThreads = s.Integer("queue_threads", 0, 64, defaults.QueueThreads),
            Writethrough = s.Boolean("writethrough", defaults.Writethrough),
            Direct = s.Boolean("direct", defaults.Direct),
        };
    }

    private static CacheConfig Cache(YamlSection s) => new()
    {
        L2Size = CacheSize(s, "l2_size"),
        RefcountSize = CacheSize(s, "refcount_size"),
    };

    // "auto" (or absent) leaves the size to the engine; otherwise bytes, or a number with K, M or G (powers of 1024).
    private static long? CacheSize(YamlSection s, string key)
    {
        if (s.Find(key) is not { } node)
        {
            return null;
        }

        string text = s.ScalarText(node, s.PathOf(key), "auto or a size such as 8M");
        if (text == "auto")
        {
            return null;
        }

        Match match = SizePattern().Match(text);
        int shift = match.Success ? match.Groups[2].Value switch { "K" => 10, "M" => 20, "G" => 30, _ => 0 } : 0;
        if (!match.Success || !long.TryParse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long value)
            || value > MaxCacheBytes >> shift || value << shift < MinCacheBytes)
        {
            throw s.Error(node, s.PathOf(key), $"expected auto or a size from 64K to 1G (bytes, or a number with K, M or G), got \"{text}\"");
        }

        return value << shift;
    }

    private static List<PoolConfig> Pools(YamlSection root, string stateDirectory, string runtimeDirectory)
    {
        var pools = new List<(PoolConfig Pool, YamlSection Section)>();
        foreach (YamlSection s in root.Sections("pools", "name", "path", "autostart"))
        {
            string name = s.RequiredString("name");
            YamlNode nameNode = s.Find("name")!;
            try
            {
                StorageNames.ValidatePoolName(name, runtimeDirectory);
            }
            catch (StorageServiceException e)
            {
                throw s.Error(nameNode, s.PathOf("name"), e.Message);
            }

            if (pools.FirstOrDefault(p => p.Pool.Name == name) is { Section: { } first })
            {
                throw s.Error(nameNode, s.PathOf("name"), $"pool \"{name}\" is already defined at line {first.Node.Start.Line}; pool names must be unique");
            }

            if (s.Find("path") is null)
            {
                throw s.Error(s.Node, s.PathOf("path"), "is required (the pool's directory, an absolute path)");
            }

            string path = AbsolutePath(s, "path", "");
            if (pools.FirstOrDefault(p => Overlaps(p.Pool.Path, path)) is { Pool: { } other, Section: { } otherSection })
            {
                throw s.Error(s.Find("path")!, s.PathOf("path"),
                    $"{path} overlaps pool \"{other.Name}\" ({other.Path}, line {otherSection.Node.Start.Line}); pools need separate directories");
            }

            if (Overlaps(stateDirectory, path))
            {
                throw s.Error(s.Find("path")!, s.PathOf("path"), $"{path} overlaps the state directory {stateDirectory}; choose a directory outside it");
            }

            pools.Add((new PoolConfig(name, path, s.Boolean("autostart", true)), s));
        }

        return pools.Select(p => p.Pool).ToList();
    }

    private static LoggingConfig Logging(YamlSection s)
    {
        var defaults = new LoggingConfig();
        return new LoggingConfig
        {
            Level = s.Choice("level", Levels, defaults.Level),
            Format = s.Choice("format", Formats, defaults.Format),
        };
    }

    private static string AbsolutePath(YamlSection s, string key, string fallback)
    {
        if (s.Find(key) is not { } node)
        {
            return fallback;
        }

        string text = s.ScalarText(node, s.PathOf(key), "an absolute path");
        return IsAbsolute(text)
            ? Path.TrimEndingDirectorySeparator(Path.GetFullPath(text))
            : throw s.Error(node, s.PathOf(key), $"expected an absolute path (starting with /), got \"{text}\"");
    }

    /// <summary>True for a path starting with <c>/</c> and free of NUL.</summary>
    public static bool IsAbsolute(string path) => path.StartsWith('/') && !path.Contains('\0', StringComparison.Ordinal);

    private static bool Overlaps(string a, string b) =>
        a == b || a.StartsWith(b + "/", StringComparison.Ordinal) || b.StartsWith(a + "/", StringComparison.Ordinal) || a == "/" || b == "/";

    // YamlException's message starts with "(Line: 1, Col: 2, Idx: 3) - (Line: ...): "; the position is printed already.
    private static string StripMark(YamlException e)
    {
        string message = e.Message;
        int split = message.IndexOf("): ", StringComparison.Ordinal);
        return message.StartsWith("(Line", StringComparison.Ordinal) && split > 0 ? message[(split + 3)..] : message;
    }

    [GeneratedRegex("^([0-9]{1,13})(?:([KMG])(?:iB)?)?$")]
    private static partial Regex SizePattern();

    private static string ReadEmbeddedDefault()
    {
        using Stream stream = typeof(ConfigLoader).Assembly.GetManifestResourceStream("lvstord.yaml")
            ?? throw new InvalidOperationException("the embedded lvstord.yaml is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
