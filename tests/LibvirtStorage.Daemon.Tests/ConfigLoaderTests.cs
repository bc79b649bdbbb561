using LibvirtStorage.Daemon.Configuration;
using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Daemon.Tests;

public sealed class ConfigLoaderTests
{
    private const string Source = "/etc/lvstor/test.yaml";

    private static DaemonConfig Parse(string yaml, ConfigOverrides? overrides = null) => ConfigLoader.Parse(yaml, Source, overrides);

    private static string Fails(string yaml, ConfigOverrides? overrides = null) =>
        Assert.Throws<ConfigException>(() => Parse(yaml, overrides)).Message;

    [Fact]
    public void A_full_file_is_read_into_the_model()
    {
        DaemonConfig config = Parse("""
            bus: unix:path=/run/test/bus
            state_directory: /srv/state/
            runtime_directory: /run/test
            admin_groups: [wheel, kvm]
            sockets: { user: root, group: "0", mode: "0640", directory_mode: 0750 }
            io: { queues: 4, queue_size: 256, parallel_requests: 2, queue_threads: 1, writethrough: true, direct: true }
            cache: { l2_size: 16M, refcount_size: 256KiB }
            jobs: { retention_seconds: 5 }
            pools:
              - name: fast
                path: /srv/fast
              - { name: slow, path: /srv/slow, autostart: false }
            logging: { level: debug, format: json }
            """);

        Assert.Equal(Source, config.Source);
        Assert.Equal("unix:path=/run/test/bus", config.Bus);
        Assert.Equal("/srv/state", config.StateDirectory);
        Assert.Equal("/run/test", config.RuntimeDirectory);
        Assert.Equal(["wheel", "kvm"], config.AdminGroups);
        Assert.Equal((0u, 0u), (config.Sockets.Uid, config.Sockets.Gid));
        Assert.Equal((UnixFileMode)0b110_100_000, config.Sockets.Mode);
        Assert.Equal((UnixFileMode)0b111_101_000, config.Sockets.DirectoryMode);
        Assert.Equal(new IoConfig { Queues = 4, QueueSize = 256, ParallelRequests = 2, QueueThreads = 1, Writethrough = true, Direct = true }, config.Io);
        Assert.Equal(new CacheConfig { L2Size = 16L << 20, RefcountSize = 256L << 10 }, config.Cache);
        Assert.Equal(TimeSpan.FromSeconds(5), config.Jobs.Retention);
        Assert.Equal([new PoolConfig("fast", "/srv/fast", true), new PoolConfig("slow", "/srv/slow", false)], config.Pools);
        Assert.Equal(new LoggingConfig { Level = LogLevel.Debug, Format = LogFormat.Json }, config.Logging);
    }

    [Fact]
    public void The_embedded_default_parses_validates_and_matches_the_model_defaults()
    {
        DaemonConfig config = ConfigLoader.Parse(ConfigLoader.EmbeddedDefaultText, ConfigLoader.EmbeddedDefaultName);

        var defaults = new DaemonConfig();
        Assert.Equal(defaults.Bus, config.Bus);
        Assert.Equal(defaults.StateDirectory, config.StateDirectory);
        Assert.Equal(defaults.RuntimeDirectory, config.RuntimeDirectory);
        Assert.Equal(defaults.AdminGroups, config.AdminGroups);
        Assert.Equal(defaults.Io, config.Io);
        Assert.Equal(defaults.Cache, config.Cache);
        Assert.Equal(defaults.Jobs, config.Jobs);
        Assert.Equal(defaults.Logging, config.Logging);
        Assert.Equal(new SocketConfig(), config.Sockets);
        Assert.Empty(config.Pools);
    }

    [Fact]
    public void The_embedded_default_is_the_shipped_example_file()
    {
        string shipped = File.ReadAllText(Path.Combine(RepositoryRoot(), "packaging", "lvstord.yaml"));
        Assert.Equal(shipped, ConfigLoader.EmbeddedDefaultText);
    }

    [Fact]
    public void An_empty_file_gives_the_built_in_values_and_no_pools()
    {
        DaemonConfig config = Parse("# nothing but a comment\n");
        Assert.Equal(new DaemonConfig { Source = Source }.Io, config.Io);
        Assert.Empty(config.Pools);
        Assert.Equal("system", config.Bus);
    }

    [Fact]
    public void Overrides_replace_the_files_values()
    {
        DaemonConfig config = Parse("bus: session\nstate_directory: /var/lib/x\n",
            new ConfigOverrides { Bus = "unix:path=/tmp/b", StateDirectory = "/tmp/s", RuntimeDirectory = "/tmp/r" });
        Assert.Equal(("unix:path=/tmp/b", "/tmp/s", "/tmp/r"), (config.Bus, config.StateDirectory, config.RuntimeDirectory));
    }

    [Fact]
    public void An_overridden_state_directory_is_checked_against_the_pools()
    {
        string message = Fails("pools: [ { name: a, path: /srv/a } ]\n", new ConfigOverrides { StateDirectory = "/srv" });
        Assert.Equal($"{Source}:1:27: pools[0].path: /srv/a overlaps the state directory /srv; choose a directory outside it", message);
    }

    [Theory]
    [InlineData("io:\n  queues: many\n", "2:11: io.queues: expected an integer from 1 to 64, got \"many\"")]
    [InlineData("io:\n  queues: 0\n", "2:11: io.queues: expected an integer from 1 to 64, got \"0\"")]
    [InlineData("io:\n  queues: 65\n", "2:11: io.queues: expected an integer from 1 to 64, got \"65\"")]
    [InlineData("io:\n  queues: \"4\"\n", "2:11: io.queues: expected an integer from 1 to 64, got the quoted string \"4\"")]
    [InlineData("io:\n  queues: [1]\n", "2:11: io.queues: expected an integer from 1 to 64, got a list")]
    [InlineData("io: { queue_size: 100 }\n", "1:19: io.queue_size: expected a power of two from 1 to 32768, got \"100\"")]
    [InlineData("io: { writethrough: yes }\n", "1:21: io.writethrough: expected true or false, got \"yes\"")]
    [InlineData("io: 4\n", "1:5: io: expected a mapping with the keys queues, queue_size, parallel_requests, queue_threads, writethrough, direct, got \"4\"")]
    [InlineData("cache: { l2_size: 8X }\n", "1:19: cache.l2_size: expected auto or a size from 64K to 1G (bytes, or a number with K, M or G), got \"8X\"")]
    [InlineData("cache: { l2_size: 2G }\n", "1:19: cache.l2_size: expected auto or a size from 64K to 1G (bytes, or a number with K, M or G), got \"2G\"")]
    [InlineData("logging: { level: loud }\n", "1:19: logging.level: expected one of trace, debug, information, warning, error, critical, none, got \"loud\"")]
    [InlineData("admin_groups: libvirt\n", "1:15: admin_groups: expected a list of names, got \"libvirt\"")]
    [InlineData("jobs: { retention_seconds: -1 }\n", "1:28: jobs.retention_seconds: expected an integer from 0 to 86400, got \"-1\"")]
    public void Wrong_types_and_ranges_name_the_line_column_and_key(string yaml, string expected) =>
        Assert.Equal($"{Source}:{expected}", Fails(yaml));

    [Theory]
    [InlineData("buss: system\n", "1:1: buss: unknown key 'buss'; top-level keys are bus, state_directory, runtime_directory, admin_groups, sockets, io, cache, jobs, pools, logging")]
    [InlineData("io:\n  queues: 1\n  queue: 2\n", "3:3: io.queue: unknown key 'queue'; io keys are queues, queue_size, parallel_requests, queue_threads, writethrough, direct")]
    [InlineData("pools:\n  - name: a\n    path: /srv/a\n    auto_start: true\n", "4:5: pools[0].auto_start: unknown key 'auto_start'; pools[0] keys are name, path, autostart")]
    public void Unknown_keys_stop_with_the_line_and_the_known_keys(string yaml, string expected) =>
        Assert.Equal($"{Source}:{expected}", Fails(yaml));

    [Theory]
    [InlineData("sockets: { mode: \"0999\" }\n", "1:18: sockets.mode: expected an octal mode such as \"0660\" (permission bits only), got \"0999\"")]
    [InlineData("sockets: { mode: rw }\n", "1:18: sockets.mode: expected an octal mode such as \"0660\" (permission bits only), got \"rw\"")]
    [InlineData("sockets: { directory_mode: \"4755\" }\n", "1:28: sockets.directory_mode: setuid, setgid and sticky bits are not allowed, got \"4755\"")]
    [InlineData("sockets: { user: no-such-user-lvstor }\n", "1:18: sockets.user: no user named \"no-such-user-lvstor\" on this system; create it or name another")]
    [InlineData("sockets: { group: no-such-group-lvstor }\n", "1:19: sockets.group: no group named \"no-such-group-lvstor\" on this system; create it or name another")]
    [InlineData("state_directory: var/lib/lvstor\n", "1:18: state_directory: expected an absolute path (starting with /), got \"var/lib/lvstor\"")]
    [InlineData("bus: tcp\n", "1:6: bus: expected system, session or a D-Bus address such as unix:path=/run/dbus/system_bus_socket, got \"tcp\"")]
    [InlineData("pools: [ { name: a, path: srv/a } ]\n", "1:27: pools[0].path: expected an absolute path (starting with /), got \"srv/a\"")]
    [InlineData("pools: [ { path: /srv/a } ]\n", "1:10: pools[0].name: is required")]
    [InlineData("pools: [ { name: a } ]\n", "1:10: pools[0].path: is required (the pool's directory, an absolute path)")]
    [InlineData("pools:\n  - { name: a, path: /srv/a }\n  - { name: a, path: /srv/b }\n", "3:13: pools[1].name: pool \"a\" is already defined at line 2; pool names must be unique")]
    [InlineData("pools:\n  - { name: a, path: /srv/a }\n  - { name: b, path: /srv/a/b }\n", "3:22: pools[1].path: /srv/a/b overlaps pool \"a\" (/srv/a, line 2); pools need separate directories")]
    [InlineData("pools: [ { name: a, path: /var/lib/lvstor/images } ]\n", "1:27: pools[0].path: /var/lib/lvstor/images overlaps the state directory /var/lib/lvstor; choose a directory outside it")]
    public void Semantic_errors_name_the_line_column_and_key(string yaml, string expected) =>
        Assert.Equal($"{Source}:{expected}", Fails(yaml));

    [Fact]
    public void Pool_names_follow_the_service_rules()
    {
        string message = Fails("pools: [ { name: .hidden, path: /srv/a } ]\n");
        Assert.StartsWith($"{Source}:1:18: pools[0].name: ", message);
        Assert.Contains(".hidden", message);
    }

    [Theory]
    [InlineData("io: [\n", "2:1: invalid YAML: ")]
    [InlineData("bus: system\nbus: session\n", "2:1: invalid YAML: Duplicate key bus")]
    [InlineData("bus: system\n---\nbus: session\n", "3:1: expected one YAML document, found several")]
    public void Bad_yaml_names_the_line(string yaml, string expected) =>
        Assert.StartsWith($"{Source}:{expected}", Fails(yaml));

    [Fact]
    public void A_missing_file_is_named()
    {
        string path = Path.Combine(Path.GetTempPath(), $"lvstord-missing-{Guid.NewGuid()}.yaml");
        ConfigException e = Assert.Throws<ConfigException>(() => ConfigLoader.Load(path, ConfigOverrides.None));
        Assert.StartsWith($"{path}: cannot read the configuration file: ", e.Message);
    }

    [Fact]
    public void The_command_line_sets_the_file_and_the_overrides()
    {
        DaemonArguments parsed = DaemonArguments.Parse(["--config", "/x.yaml", "--bus", "session", "--state-dir", "/s/", "--runtime-dir=/r"]);
        Assert.Equal("/x.yaml", parsed.ConfigFile);
        Assert.Equal(new ConfigOverrides { Bus = "session", StateDirectory = "/s", RuntimeDirectory = "/r" }, parsed.Overrides);
    }

    [Theory]
    [InlineData("--state-dir relative", "--state-dir: expected an absolute path, got \"relative\"")]
    [InlineData("--bus nowhere", "--bus: expected system, session or a D-Bus address such as unix:path=/run/x/bus, got \"nowhere\"")]
    [InlineData("--config", "--config needs a value")]
    [InlineData("--frobnicate", "unknown argument '--frobnicate'")]
    public void A_bad_command_line_is_refused(string args, string expected) =>
        Assert.Equal(expected, Assert.Throws<ArgumentException>(() => DaemonArguments.Parse(args.Split(' '))).Message);

    internal static string RepositoryRoot()
    {
        for (string? directory = AppContext.BaseDirectory; directory is not null; directory = Path.GetDirectoryName(directory))
        {
            if (Directory.Exists(Path.Combine(directory, "packaging")) && Directory.Exists(Path.Combine(directory, "src")))
            {
                return directory;
            }
        }

        throw new InvalidOperationException("cannot find the repository root above " + AppContext.BaseDirectory);
    }
}
