using System.Text.Json;
using LibvirtStorage.Cli.Commands;
using LibvirtStorage.Cli.Service;
using LibvirtStorage.Client;
using Xunit;

namespace LibvirtStorage.Cli.Tests;

/// <summary>The service commands' pieces that need no lvstord: sizes, exit codes, JSON field names, usage errors.</summary>
public sealed class ServiceCliUnitTests
{
    [Theory]
    [InlineData("4096", 4096UL)]
    [InlineData("1b", 1UL)]
    [InlineData("64k", 65536UL)]
    [InlineData("64KiB", 65536UL)]
    [InlineData("1KB", 1000UL)]
    [InlineData("512M", 512UL << 20)]
    [InlineData("10G", 10UL << 30)]
    [InlineData("10GiB", 10UL << 30)]
    [InlineData("2GB", 2_000_000_000UL)]
    [InlineData("1T", 1UL << 40)]
    [InlineData("3P", 3UL << 50)]
    [InlineData("1E", 1UL << 60)]
    public void Sizes_parse_like_virsh(string text, ulong bytes) => Assert.Equal(bytes, VirshSizes.Parse(text));

    [Theory]
    [InlineData("0", "greater than 0")]
    [InlineData("0G", "greater than 0")]
    [InlineData("-1G", "invalid size")]
    [InlineData("", "invalid size")]
    [InlineData("G", "invalid size")]
    [InlineData("1.5G", "invalid unit")]
    [InlineData("12Q", "invalid unit")]
    [InlineData("10 G B", "invalid unit")]
    [InlineData("16E", "too large")]
    [InlineData("99999999999999999999", "too large")]
    public void Bad_sizes_are_usage_errors(string text, string message)
    {
        var e = Assert.Throws<CliUsageException>(() => VirshSizes.Parse(text));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0UL, "0.00 B")]
    [InlineData(512UL, "512.00 B")]
    [InlineData(1536UL, "1.50 KiB")]
    [InlineData(10UL << 30, "10.00 GiB")]
    public void Sizes_print_like_virsh(ulong bytes, string text) => Assert.Equal(text, VirshSizes.Format(bytes));

    [Fact]
    public void Resize_follows_virsh_semantics()
    {
        const ulong G = 1UL << 30;
        Assert.Equal(3 * G, ResizeRequest.Parse("3G", delta: false, shrink: false).NewCapacity(2 * G));
        Assert.Equal(3 * G, ResizeRequest.Parse("1G", delta: true, shrink: false).NewCapacity(2 * G));
        Assert.Equal(1 * G, ResizeRequest.Parse("1G", delta: true, shrink: true).NewCapacity(2 * G));
        ResizeRequest negative = ResizeRequest.Parse("-1G", delta: false, shrink: true);
        Assert.True(negative.Delta && negative.Shrink);
        Assert.Equal(1 * G, negative.NewCapacity(2 * G));
        Assert.Contains("requires --shrink", Assert.Throws<CliUsageException>(() => ResizeRequest.Parse("-1G", false, false)).Message, StringComparison.Ordinal);
        Assert.Throws<CliUsageException>(() => ResizeRequest.Parse("2G", true, true).NewCapacity(2 * G));
        Assert.Throws<CliUsageException>(() => ResizeRequest.Parse("0", true, false));
    }

    [Fact]
    public void Every_error_kind_has_its_own_exit_code()
    {
        var expected = new Dictionary<StorageErrorKind, int>
        {
            [StorageErrorKind.Other] = 1,
            [StorageErrorKind.NotFound] = 3,
            [StorageErrorKind.Exists] = 4,
            [StorageErrorKind.InUse] = 5,
            [StorageErrorKind.Invalid] = 6,
            [StorageErrorKind.Busy] = 7,
            [StorageErrorKind.Corrupt] = 8,
            [StorageErrorKind.Io] = 9,
            [StorageErrorKind.Unsupported] = 10,
            [StorageErrorKind.Cancelled] = 11,
            [StorageErrorKind.AccessDenied] = 12,
            [StorageErrorKind.ServiceUnavailable] = 13,
        };
        Assert.Equal(Enum.GetValues<StorageErrorKind>().Order(), expected.Keys.Order());
        foreach ((StorageErrorKind kind, int code) in expected)
        {
            Assert.Equal(code, ExitCodes.For(kind));
        }

        Assert.Equal(0, ExitCodes.Ok);
        Assert.Equal(2, ExitCodes.Usage);
        Assert.Equal(130, ExitCodes.Interrupted);
    }

    [Theory]
    [InlineData("org.lvstor.Storage1.Error.NotFound", StorageErrorKind.NotFound)]
    [InlineData("org.lvstor.Storage1.Error.InUse", StorageErrorKind.InUse)]
    [InlineData("org.lvstor.Storage1.Error.AccessDenied", StorageErrorKind.AccessDenied)]
    [InlineData("org.freedesktop.DBus.Error.AccessDenied", StorageErrorKind.AccessDenied)]
    [InlineData("org.lvstor.Storage1.Error.ServiceUnavailable", StorageErrorKind.ServiceUnavailable)]
    [InlineData("org.lvstor.Storage1.Error.Other", StorageErrorKind.Other)]
    [InlineData("org.lvstor.Storage1.Error.3", StorageErrorKind.Other)]
    [InlineData("org.lvstor.Storage1.Error.", StorageErrorKind.Other)]
    [InlineData("org.freedesktop.DBus.Error.InvalidArgs", StorageErrorKind.Other)]
    public void Error_names_map_to_kinds(string name, StorageErrorKind kind)
    {
        Assert.Equal(kind, StorageClientException.ParseKind(name));
        var e = new StorageClientException(name, "message");
        Assert.Equal(kind, e.Kind);
        Assert.Equal(name, e.ErrorName);
        Assert.Equal("message", e.Message);
    }

    private static string[] Fields<T>(T value)
    {
        using JsonDocument doc = JsonDocument.Parse(JsonSerializer.Serialize(value, ServiceOutput.Json));
        return doc.RootElement.EnumerateObject().Select(p => p.Name).ToArray();
    }

    [Fact]
    public void Json_field_names_are_stable_snake_case()
    {
        var pool = new PoolInfo("/org/lvstor/Storage1/pool/p", "p", "u", "/srv/p", true, false, 1, 2, 3, 4);
        Assert.Equal(["object_path", "name", "uuid", "path", "active", "autostart", "capacity", "allocation", "available", "volume_count"], Fields(pool));

        var volume = new VolumeInfo("/o", "v", "k", "/o/p", "p", "qcow2", 1, 2, false, "/run/lvstor/p/v.sock", "/srv/p/v", [new BackingLayer("b", "s", "raw", "/srv/p/b")],
            [new SnapshotInfo("s", DateTimeOffset.UnixEpoch, "qcow2", "/srv/p/.v.s")], [new VolumeUse("guest", "pid 1")], "listening", string.Empty);
        Assert.Equal(["object_path", "name", "key", "pool_object_path", "pool_name", "format", "capacity", "allocation", "read_only", "path", "file", "backing_chain", "snapshots", "users", "export_state", "problem"], Fields(volume));
        Assert.Equal(["volume", "snapshot", "format", "file"], Fields(volume.BackingChain[0]));
        Assert.Equal(["name", "created_at", "format", "file"], Fields(volume.Snapshots[0]));
        Assert.Equal(["kind", "who"], Fields(volume.Users[0]));

        var job = new JobInfo("/org/lvstor/Storage1/job/1", "clone", "p", "v", "w", 1, 2, "completed", string.Empty, string.Empty, "/o", DateTimeOffset.UnixEpoch);
        Assert.Equal(["object_path", "type", "pool", "volume", "target", "bytes_done", "bytes_total", "state", "error_name", "error_message", "result", "started_at", "speed", "paused", "priority"], Fields(job));

        var status = new StatusCommand.StatusJson("1", "/var/lib/lvstor", "/run/lvstor", 1, 1, 2, 2, 0, 0, DateTimeOffset.UnixEpoch, [new VolumeUser("p", "v", "backing", "w")]);
        Assert.Equal(["version", "state_directory", "runtime_directory", "pools", "active_pools", "volumes", "exports", "connected_guests", "jobs", "started_at", "users"], Fields(status));
        Assert.Equal(["pool", "volume", "kind", "who"], Fields(status.Users[0]));

        Assert.Equal(["adopted", "problems"], Fields(new PoolRefreshResult(["a"], [new PoolProblem("f", "m")])));
        Assert.Equal(["file", "message"], Fields(new PoolProblem("f", "m")));
    }

    private static (int Code, string Out, string Err) Lvstor(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = Program.Run(args, output, error, isTerminal: false);
        return (code, output.ToString(), error.ToString());
    }

    [Theory]
    [InlineData("vol-create-as", "p", "v", "0")]
    [InlineData("vol-create-as", "p", "v", "ten")]
    [InlineData("vol-create-as", "p", "v", "1G", "--format", "vmdk")]
    [InlineData("vol-resize", "v", "-1G", "--pool", "p")]
    [InlineData("vol-info", "just-a-name")]
    [InlineData("pool-start")]
    [InlineData("pool-list", "--bogus")]
    [InlineData("vol-upload", "v", "f", "--pool", "p", "--offset", "x")]
    public void Usage_errors_exit_2_before_connecting(params string[] args)
    {
        // An unreachable bus: a usage error must be reported without trying it.
        var r = Lvstor([.. args, "--bus", "unix:path=/nonexistent/lvstor-test-bus"]);
        Assert.Equal(2, r.Code);
        Assert.StartsWith("lvstor: error: ", r.Err, StringComparison.Ordinal);
        Assert.Equal(string.Empty, r.Out);
        Assert.DoesNotContain("   at ", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void Unreachable_bus_is_service_unavailable()
    {
        var r = Lvstor("pool-list", "--bus", "unix:path=/nonexistent/lvstor-test-bus");
        Assert.Equal(13, r.Code);
        Assert.StartsWith("lvstor: error: cannot connect to unix:path=/nonexistent/lvstor-test-bus", r.Err, StringComparison.Ordinal);
    }
}
