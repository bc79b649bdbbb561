using System.Text.Json;
using LibvirtStorage.Images.Tests.Infrastructure;
using LibvirtStorage.TestSupport;
using Xunit;

namespace LibvirtStorage.Cli.Tests.Service;

/// <summary>lvstor (in-process, Program.Run with --bus) against the real StorageBusServer on a private dbus-daemon.</summary>
public sealed class ServiceCliEndToEndTests
{
    private const long M = 1 << 20;

    private sealed class Cli(string address)
    {
        public (int Code, string Out, string Err) Run(params string[] args)
        {
            using var output = new StringWriter();
            using var error = new StringWriter();
            int code = Program.Run([.. args, "--bus", address], output, error, isTerminal: false);
            return (code, output.ToString(), error.ToString());
        }

        /// <summary>Runs a command that must succeed and returns its stdout.</summary>
        public string Ok(params string[] args)
        {
            var r = Run(args);
            Assert.True(r.Code == 0, $"lvstor {string.Join(' ', args)} exited {r.Code}: {r.Err}");
            Assert.Equal(string.Empty, r.Err);
            return r.Out;
        }

        public JsonElement Json(params string[] args)
        {
            using JsonDocument doc = JsonDocument.Parse(Ok([.. args, "--json"]));
            return doc.RootElement.Clone();
        }
    }

    [BusFact]
    public async Task Pools_define_start_list_info_autostart_destroy_undefine()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        var cli = new Cli(host.Address);
        string dir = host.PoolDirectory("p1");

        Assert.Equal("Pool p1 defined\n", cli.Ok("pool-define-as", "p1", dir));
        Assert.True(Directory.Exists(dir));
        Assert.Equal(0, cli.Json("pool-list").GetArrayLength());
        JsonElement all = cli.Json("pool-list", "--all");
        Assert.Equal("p1", all[0].GetProperty("name").GetString());
        Assert.False(all[0].GetProperty("active").GetBoolean());
        Assert.Contains("inactive", cli.Ok("pool-list", "--inactive"), StringComparison.Ordinal);

        Assert.Equal("Pool p1 started\n", cli.Ok("pool-start", "p1"));
        JsonElement info = cli.Json("pool-info", "p1");
        Assert.True(info.GetProperty("active").GetBoolean());
        Assert.Equal(dir, info.GetProperty("path").GetString());
        Assert.True(info.GetProperty("capacity").GetUInt64() > 0);
        string human = cli.Ok("pool-info", "p1");
        Assert.Contains("State:", human, StringComparison.Ordinal);
        Assert.Contains("running", human, StringComparison.Ordinal);
        string list = cli.Ok("pool-list");
        Assert.Contains("p1", list, StringComparison.Ordinal);
        Assert.Contains("active", list, StringComparison.Ordinal);

        Assert.True(cli.Json("pool-autostart", "p1").GetProperty("autostart").GetBoolean());
        Assert.False(cli.Json("pool-autostart", "p1", "--disable").GetProperty("autostart").GetBoolean());

        // Undefine is refused while the pool runs: Invalid (exit 6) with lvstord's message.
        var refused = cli.Run("pool-undefine", "p1");
        Assert.Equal(6, refused.Code);
        Assert.StartsWith("lvstor: error: ", refused.Err, StringComparison.Ordinal);

        Assert.Equal("Pool p1 destroyed\n", cli.Ok("pool-destroy", "p1"));
        Assert.Equal("Pool p1 has been undefined\n", cli.Ok("pool-undefine", "p1"));
        Assert.Equal(0, cli.Json("pool-list", "--all").GetArrayLength());
        Assert.True(Directory.Exists(dir), "undefine leaves the directory");
    }

    [BusFact]
    public async Task Unknown_pool_is_not_found_and_an_absent_lvstord_is_service_unavailable()
    {
        await using LvstordHost host = await LvstordHost.StartAsync();
        var cli = new Cli(host.Address);
        var r = cli.Run("pool-info", "nope");
        Assert.Equal(3, r.Code);
        Assert.StartsWith("lvstor: error: ", r.Err, StringComparison.Ordinal);
        Assert.Contains("nope", r.Err, StringComparison.Ordinal);
        Assert.Equal(string.Empty, r.Out);

        r = cli.Run("vol-list", "nope", "--json");
        Assert.Equal(3, r.Code);

        r = cli.Run("vol-create-as", "nope", "v", "0");
        Assert.Equal(2, r.Code);
        Assert.Equal("lvstor: error: capacity must be greater than 0\n", r.Err);

        using PrivateBus empty = PrivateBus.Start();
        var absent = new Cli(empty.Address).Run("status");
        Assert.Equal(13, absent.Code);
        Assert.Equal($"lvstor: error: lvstord is not running on {empty.Address}: start it with `systemctl start lvstord`\n", absent.Err);
    }
}
