using System.Text.Json;
using LibvirtStorage.Images;
using LibvirtStorage.Service.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Service.Tests.State;

public sealed class PersistenceTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public void A_new_instance_sees_the_same_pools_volumes_chains_and_snapshots()
    {
        using var h = new ServiceHarness();
        h.Service.SetPoolAutostart("p", true);
        h.Service.DefinePool("stopped", h.PoolPath("stopped"));
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", MiB));
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        h.Service.CreateSnapshot("p", "vm1", "before-upgrade");
        string before = h.Fingerprint();
        VolumeInfo vm1 = h.Service.GetVolume("p", "vm1");

        StorageService restarted = h.Reopen();
        Assert.Empty(restarted.LoadProblems);
        Assert.Equal(before, h.Fingerprint());
        VolumeInfo again = restarted.GetVolume("p", "vm1");
        Assert.Equal(vm1.Key, again.Key);
        Assert.Equal(vm1.Chain, again.Chain);
        Assert.Equal(vm1.Snapshots, again.Snapshots);
        Assert.False(restarted.GetPool("stopped").Active);
    }

    [Fact]
    public void State_file_is_readable_json_and_no_temporary_is_left()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        string text = System.IO.File.ReadAllText(h.StateFile);
        using JsonDocument document = JsonDocument.Parse(text);
        Assert.Equal(1, document.RootElement.GetProperty("version").GetInt32());
        Assert.Contains("\"name\": \"disk\"", text, StringComparison.Ordinal);
        Assert.Contains("\"format\": \"Qcow2\"", text, StringComparison.Ordinal);
        Assert.Equal(["inventory.json"], Directory.GetFileSystemEntries(h.StateDirectory).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("null")]
    [InlineData("{\"version\": 99, \"pools\": []}")]
    [InlineData("{\"version\": 1, \"pools\": [{\"uuid\": \"00000000-0000-0000-0000-000000000000\"}]}")]
    [InlineData("{\"version\": 1, \"pools\": [{\"name\": \"p\", \"path\": \"/x\", \"volumes\": []}, {\"name\": \"p\", \"path\": \"/y\", \"volumes\": []}]}")]
    [InlineData("{\"version\": 1, \"pools\": [{\"name\": \"p\", \"path\": \"relative\", \"volumes\": []}]}")]
    [InlineData("{\"version\": 1, \"pools\": [{\"name\": \"p\", \"path\": \"/x\", \"volumes\": [{\"name\": \"v\", \"file\": \"../../etc/passwd\", \"snapshots\": []}]}]}")]
    public void A_damaged_state_file_is_a_Corrupt_error_naming_it(string content)
    {
        using var h = new ServiceHarness();
        System.IO.File.WriteAllText(h.StateFile, content);
        var ex = Expect.Error(StorageErrorKind.Corrupt, () => h.Reopen());
        Assert.Contains(h.StateFile, ex.Message, StringComparison.Ordinal);
        Assert.Contains("move it aside", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_and_changed_images_are_reported_on_load()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("gone", "raw", MiB));
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", MiB));
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        System.IO.File.Delete(h.File("gone"));
        Tool.QemuImg(h.PoolPath("p"), "rebase", "-u", "-b", "", "vm1"); // cut the chain behind our back

        StorageService restarted = h.Reopen();
        Assert.Equal(2, restarted.LoadProblems.Count);
        Assert.Contains(restarted.LoadProblems, p => p.File == "gone" && p.Message.Contains("cannot be opened", StringComparison.Ordinal));
        Assert.Contains(restarted.LoadProblems, p => p.File == "vm1" && p.Message.Contains("differs from the inventory", StringComparison.Ordinal));
    }

    [Fact]
    public void Files_left_by_an_interrupted_operation_are_reported()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        System.IO.File.WriteAllText(h.File(".disk.7"), "orphan overlay");
        System.IO.File.WriteAllText(h.File(".new.creating-0123"), "half a create");
        System.IO.File.WriteAllText(h.File(".bashrc"), "not ours");
        StorageService restarted = h.Reopen();
        Assert.Equal([".disk.7", ".new.creating-0123"], restarted.LoadProblems.Select(p => p.File).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_pool_whose_directory_is_missing_loads_stopped_and_is_reported()
    {
        using var h = new ServiceHarness();
        h.Service.DefinePool("q", h.PoolPath("q"));
        h.Service.SetPoolAutostart("q", true);
        Directory.Delete(h.PoolPath("q"));
        StorageService restarted = h.Reopen();
        Assert.False(restarted.GetPool("q").Active);
        Assert.Contains(restarted.LoadProblems, p => p.Pool == "q" && p.Message.Contains("missing", StringComparison.Ordinal));
    }

    [Fact]
    public void Autostart_pools_start_on_load()
    {
        using var h = new ServiceHarness();
        h.Service.SetPoolAutostart("p", true);
        h.Service.StopPool("p");
        Assert.True(h.Reopen().GetPool("p").Active);
        Assert.Equal(ImageFormat.Raw, h.Service.CreateVolume("p", new VolumeSpec("d", "raw", MiB)).Format);
    }
}
