using System.Diagnostics;
using System.Globalization;
using Xunit;
using Xunit.Abstractions;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>
/// A libvirt domain whose disk is <c>&lt;disk type='vhostuser'&gt;</c> on the path <c>virsh vol-path</c> gives boots
/// the test guest (tests/guest, TCG), which writes and verifies data through lvstord.
/// </summary>
[Collection(LibvirtCollection.Name)]
public sealed class DomainTests(LibvirtWorld world, ITestOutputHelper output)
{
    private const long MiB = 1024 * 1024;

    // The other test projects share both cores with these TCG guests: the limit only tells a hang from a slow boot.
    private static readonly TimeSpan GuestTimeout = TimeSpan.FromMinutes(4);

    [LibvirtGuestFact]
    public void A_vhostuser_disk_on_vol_path_boots_the_guest_which_writes_and_verifies_data()
    {
        world.Up();
        string pool = world.StartPool("dom");
        world.VirshOk("vol-create-as", pool, "disk.qcow2", "64M", "--format", "qcow2");
        string socket = world.VirshOk("vol-path", "--pool", pool, "disk.qcow2").Trim();

        string serial = StartDomain(world.Unique("wv"), socket,
            "lvstor.task=write-verify lvstor.size=64M lvstor.write=0xab@1M+4M,0x5a@40M+4M");
        string console = WaitForResult(serial);
        Assert.Contains("LVSTOR-RESULT ok", console);

        // What the guest wrote is in the volume, as lvstord serves it to anyone.
        Assert.True(Region(pool, "disk.qcow2", 1 * MiB, 4 * MiB).All(b => b == 0xab), "guest data at 1M is not in the volume");
        Assert.True(Region(pool, "disk.qcow2", 40 * MiB, 4 * MiB).All(b => b == 0x5a), "guest data at 40M is not in the volume");
        world.VirshOk("vol-delete", "--pool", pool, "disk.qcow2");
    }

    [LibvirtGuestFact]
    public void While_the_domain_runs_vol_delete_is_refused_and_vol_resize_grows_the_disk_it_sees()
    {
        world.Up();
        string pool = world.StartPool("live");
        world.VirshOk("vol-create-as", pool, "live.raw", "64M", "--format", "raw");
        string socket = world.VirshOk("vol-path", "--pool", pool, "live.raw").Trim();
        string domain = world.Unique("live");

        // The resize task waits (up to resizewait) for the disk to grow, then writes past the old end and verifies.
        string serial = StartDomain(domain, socket,
            "lvstor.task=resize lvstor.size=64M lvstor.newsize=96M lvstor.resizewait=200 lvstor.write=0x11@1M+4M,0x22@80M+4M");
        WaitFor(serial, "waiting for resize");

        CommandResult delete = world.Virsh("vol-delete", "--pool", pool, "live.raw");
        output.WriteLine(delete.ToString());
        Assert.True(delete.ExitCode != 0, $"vol-delete of a volume in use succeeded:\n{delete}");
        Assert.StartsWith("error: ", delete.Stderr.TrimStart());
        Assert.Contains("live.raw", delete.Stderr);
        Assert.Contains("in use", delete.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Contains($"domain '{domain}'", delete.Stderr, StringComparison.Ordinal);   // named as libvirt knows it

        CommandResult shrink = world.Virsh("vol-resize", "--pool", pool, "live.raw", "32M", "--shrink");
        output.WriteLine(shrink.ToString());
        Assert.True(shrink.ExitCode != 0, $"shrinking a disk under a running guest succeeded:\n{shrink}");
        Assert.Contains("in use", shrink.Stderr, StringComparison.OrdinalIgnoreCase);

        Assert.Contains("live.raw", world.VolumeNames(pool));
        Assert.Equal(0, world.Exec("test", "-S", socket).ExitCode);

        world.VirshOk("vol-resize", "--pool", pool, "live.raw", "96M");
        string console = WaitForResult(serial);
        Assert.Contains("LVSTOR-RESULT ok", console);
        Assert.True(Region(pool, "live.raw", 80 * MiB, 4 * MiB).All(b => b == 0x22), "guest data written past the old end is not in the volume");

        // The guest is gone: now the volume may go.
        WaitUntilGone(domain);
        world.VirshOk("vol-delete", "--pool", pool, "live.raw");
    }

    private string StartDomain(string name, string socket, string task)
    {
        string guest = BuildGuest();
        string serial = Path.Combine(world.Work, name + ".serial.log");
        string xml = Path.Combine(world.Work, name + ".xml");
        File.WriteAllText(xml, $"""
            <domain type='qemu'>
              <name>{name}</name>
              <memory unit='MiB'>256</memory>
              <vcpu>1</vcpu>
              <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
              <os>
                <type arch='x86_64' machine='q35'>hvm</type>
                <kernel>{guest}/vmlinuz</kernel>
                <initrd>{guest}/initrd.img</initrd>
                <cmdline>console=ttyS0 quiet loglevel=3 panic=-1 {task}</cmdline>
              </os>
              <cpu mode='maximum' check='none'/>
              <on_poweroff>destroy</on_poweroff>
              <on_reboot>destroy</on_reboot>
              <on_crash>destroy</on_crash>
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
                <disk type='vhostuser' device='disk'>
                  <driver name='qemu' type='raw'/>
                  <source type='unix' path='{socket}'><reconnect enabled='yes' timeout='10'/></source>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <serial type='file'><source path='{serial}'/><target port='0'/></serial>
                <memballoon model='none'/>
              </devices>
            </domain>
            """);
        CommandResult r = world.Virsh("create", xml);
        Assert.True(r.ExitCode == 0, $"virsh create failed:\n{r}\n{world.Logs()}");
        return serial;
    }

    private string WaitFor(string serial, string text)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < GuestTimeout)
        {
            string console = File.Exists(serial) ? File.ReadAllText(serial) : "";
            if (console.Contains(text, StringComparison.Ordinal))
                return console;
            if (console.Contains("LVSTOR-RESULT", StringComparison.Ordinal))
                Assert.Fail($"the guest ended before '{text}':\n{console}");
            Thread.Sleep(200);
        }

        Assert.Fail($"no '{text}' on the guest console within {GuestTimeout.TotalMinutes} minutes:\n{(File.Exists(serial) ? File.ReadAllText(serial) : "(no console file)")}\n{world.Logs()}");
        return "";
    }

    private string WaitForResult(string serial)
    {
        string console = WaitFor(serial, "LVSTOR-RESULT");
        output.WriteLine(console);
        return console;
    }

    private void WaitUntilGone(string domain)
    {
        var clock = Stopwatch.StartNew();
        while (world.Virsh("domstate", domain) is { ExitCode: 0 } r && !r.Stdout.Contains("shut off", StringComparison.Ordinal))
        {
            Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), $"domain {domain} did not end after the guest powered off");
            Thread.Sleep(200);
        }
    }

    private byte[] Region(string pool, string volume, long offset, long length)
    {
        string file = Path.Combine(world.Work, world.Unique("region"));
        world.VirshOk("vol-download", "--pool", pool, volume, file,
            "--offset", offset.ToString(CultureInfo.InvariantCulture), "--length", length.ToString(CultureInfo.InvariantCulture));
        byte[] bytes = File.ReadAllBytes(file);
        Assert.Equal(length, bytes.Length);
        return bytes;
    }

    private static string BuildGuest()
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        info.ArgumentList.Add(Path.Combine(LibvirtEnvironment.GuestScripts, "build-guest.sh"));
        info.Environment["LVSTOR_NO_APT"] = "1";
        using var p = Process.Start(info)!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        string dir = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0 && Directory.Exists(dir), $"build-guest.sh failed (exit {p.ExitCode}):\n{err.Result}");
        return dir.Split('\n')[^1];
    }
}
