using Microsoft.Win32.SafeHandles;
using Tmds.DBus.Protocol;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>
/// Every method with bad arguments gets the documented error name, and the inventory (pools, volumes and the
/// pool directory listing) is exactly as before the call.
/// </summary>
public sealed class ArgumentTests : IClassFixture<BusServerFixture>, IAsyncLifetime
{
    private const string Manager = "org.lvstor.Storage1.Manager";
    private const string Pool = "org.lvstor.Storage1.Pool";
    private const string Volume = "org.lvstor.Storage1.Volume";
    private const string Err = "org.lvstor.Storage1.Error.";
    private const string Root = StorageBusServer.RootPath;
    private static readonly string Base = BusServerFixture.VolumePath("base");
    private static readonly string LongName = new('a', 300);

    private readonly BusServerFixture _fixture;

    public ArgumentTests(BusServerFixture fixture) => _fixture = fixture;

    public async Task InitializeAsync()
    {
        if (LibvirtStorage.TestSupport.PrivateBus.MissingReason is not null || _fixture.Service.ListVolumes(BusServerFixture.Pool).Any(v => v.Name == "base"))
        {
            return;
        }

        await _fixture.CreateVolumeAsync("base", "qcow2", 4 << 20);
        await _fixture.CreateVolumeAsync("rawbase", "raw", 4 << 20);
        string q = Path.Combine(_fixture.Root, "pool-q");
        _fixture.Service.DefinePool("q", q);
        _fixture.Service.StartPool("q");
        _fixture.Service.CreateVolume("q", new LibvirtStorage.Service.VolumeSpec("other", "qcow2", 1 << 20));
        _fixture.Server.Resync();
    }

    public Task DisposeAsync() => Task.CompletedTask;

    private sealed record Case(string Path, string Interface, string Member, string Signature, BusServerFixture.ArgsWriter? Args, string Error);

    private static Case CreateVolume(string name, string format, ulong capacity, string backing, string error, Dictionary<string, VariantValue>? options = null) =>
        new(BusServerFixture.PoolPath, Pool, "CreateVolume", "sstsa{sv}", (ref MessageWriter w) =>
        {
            w.WriteString(name);
            w.WriteString(format);
            w.WriteUInt64(capacity);
            w.WriteString(backing);
            w.WriteDictionary(options ?? []);
        }, error);

    private static Case S(string path, string iface, string member, string value, string error) =>
        new(path, iface, member, "s", (ref MessageWriter w) => w.WriteString(value), error);

    private static Case Clone(string target, string mode, string format, string error) =>
        new(Base, Volume, "Clone", "sss", (ref MessageWriter w) => { w.WriteString(target); w.WriteString(mode); w.WriteString(format); }, error);

    private static Case CloneFrom(string target, string mode, Dictionary<string, VariantValue> options, string error) =>
        new(Base, Volume, "CloneFrom", "sssa{sv}", (ref MessageWriter w) =>
        {
            w.WriteString(target);
            w.WriteString(mode);
            w.WriteString("");
            w.WriteDictionary(options);
        }, error);

    private static Case Transfer(string member, ulong offset, ulong length, string error) =>
        new(Base, Volume, member, "htt", (ref MessageWriter w) =>
        {
            w.WriteHandle(File.OpenHandle("/dev/null", FileMode.Open, member == "Upload" ? FileAccess.Read : FileAccess.Write));
            w.WriteUInt64(offset);
            w.WriteUInt64(length);
        }, error);

    private static Case Live(string member, Dictionary<string, VariantValue> options, string error) =>
        new(Base, Volume, member, "a{sv}", (ref MessageWriter w) => w.WriteDictionary(options), error);

    private static readonly Dictionary<string, Case> Cases = new()
    {
        ["stream to an unknown base"] = Live("Stream", new() { ["base"] = VariantValue.String("nope") }, Err + "NotFound"),
        ["stream unknown option"] = Live("Stream", new() { ["bandwidth"] = VariantValue.UInt64(1) }, Err + "Invalid"),
        ["stream speed as a string"] = Live("Stream", new() { ["speed"] = VariantValue.String("10M") }, Err + "Invalid"),
        ["stream base as a number"] = Live("Stream", new() { ["base"] = VariantValue.UInt32(1) }, Err + "Invalid"),
        ["stream unknown priority"] = Live("Stream", new() { ["priority"] = VariantValue.String("urgent") }, Err + "Invalid"),
        ["move with a base option"] = new(Base, Volume, "MoveBase", "sa{sv}", (ref MessageWriter w) => { w.WriteString("q"); w.WriteDictionary(new Dictionary<string, VariantValue> { ["base"] = VariantValue.String("s1") }); }, Err + "Invalid"),
        ["move to an unknown pool"] = new(Base, Volume, "MoveBase", "sa{sv}", (ref MessageWriter w) => { w.WriteString("nope"); w.WriteDictionary(new Dictionary<string, VariantValue>()); }, Err + "NotFound"),
        ["move to its own pool"] = new(Base, Volume, "MoveBase", "sa{sv}", (ref MessageWriter w) => { w.WriteString("p"); w.WriteDictionary(new Dictionary<string, VariantValue>()); }, Err + "Invalid"),
        ["stream speed 2^64-1"] = Live("Stream", new() { ["speed"] = VariantValue.UInt64(ulong.MaxValue) }, Err + "Invalid"),
        ["commit without a snapshot"] = Live("Commit", [], Err + "Invalid"),
        ["commit wrong signature"] = new(Base, Volume, "Commit", "s", (ref MessageWriter w) => w.WriteString("s1"), "org.freedesktop.DBus.Error.InvalidArgs"),
        ["pause unknown job"] = new(StorageBusServer.RootPath + "/job/999999", "org.lvstor.Storage1.Job", "Pause", "", null, Err + "NotFound"),
        ["set speed of unknown job"] = new(StorageBusServer.RootPath + "/job/999999", "org.lvstor.Storage1.Job", "SetSpeed", "t", (ref MessageWriter w) => w.WriteUInt64(1), Err + "NotFound"),
        ["define duplicate pool"] = new(Root, Manager, "DefinePool", "ss", (ref MessageWriter w) => { w.WriteString("p"); w.WriteString("/tmp/lvstor-nowhere-dup"); }, Err + "Exists"),
        ["define pool name with slash"] = new(Root, Manager, "DefinePool", "ss", (ref MessageWriter w) => { w.WriteString("a/b"); w.WriteString("/tmp/lvstor-nowhere-1"); }, Err + "Invalid"),
        ["define pool name dot-dot"] = new(Root, Manager, "DefinePool", "ss", (ref MessageWriter w) => { w.WriteString(".."); w.WriteString("/tmp/lvstor-nowhere-2"); }, Err + "Invalid"),
        ["define pool name with space"] = new(Root, Manager, "DefinePool", "ss", (ref MessageWriter w) => { w.WriteString("a b"); w.WriteString("/tmp/lvstor-nowhere-3"); }, Err + "Invalid"),
        ["define pool name with newline"] = new(Root, Manager, "DefinePool", "ss", (ref MessageWriter w) => { w.WriteString("a\nb"); w.WriteString("/tmp/lvstor-nowhere-4"); }, Err + "Invalid"),
        ["define pool name too long"] = new(Root, Manager, "DefinePool", "ss", (ref MessageWriter w) => { w.WriteString(LongName); w.WriteString("/tmp/lvstor-nowhere-5"); }, Err + "Invalid"),
        ["get unknown pool"] = S(Root, Manager, "GetPool", "nope", Err + "NotFound"),
        ["volume key not a uuid"] = S(Root, Manager, "GetVolumeByKey", "not-a-uuid", Err + "Invalid"),
        ["unknown volume key"] = S(Root, Manager, "GetVolumeByKey", Guid.NewGuid().ToString(), Err + "NotFound"),
        ["unknown volume path"] = S(Root, Manager, "GetVolumeByPath", "/run/lvstor/p/nope.sock", Err + "NotFound"),
        ["get unknown volume"] = S(BusServerFixture.PoolPath, Pool, "GetVolume", "nope", Err + "NotFound"),
        ["create duplicate volume"] = CreateVolume("base", "qcow2", 1 << 20, "", Err + "Exists"),
        ["create volume name with slash"] = CreateVolume("a/b", "qcow2", 1 << 20, "", Err + "Invalid"),
        ["create volume name dot-dot"] = CreateVolume("..", "qcow2", 1 << 20, "", Err + "Invalid"),
        ["create volume hidden name"] = CreateVolume(".hidden", "qcow2", 1 << 20, "", Err + "Invalid"),
        ["create volume name with space"] = CreateVolume("a b", "qcow2", 1 << 20, "", Err + "Invalid"),
        ["create volume name with newline"] = CreateVolume("a\nb", "qcow2", 1 << 20, "", Err + "Invalid"),
        ["create volume name too long"] = CreateVolume(LongName, "qcow2", 1 << 20, "", Err + "Invalid"),
        ["create volume empty name"] = CreateVolume("", "qcow2", 1 << 20, "", Err + "Invalid"),
        ["create volume zero size without backing"] = CreateVolume("v0", "qcow2", 0, "", Err + "Invalid"),
        ["create volume size 2^63"] = CreateVolume("v1", "qcow2", 1UL << 63, "", Err + "Invalid"),
        ["create volume size 2^64-1"] = CreateVolume("v2", "raw", ulong.MaxValue, "", Err + "Invalid"),
        ["create volume size above 2 PiB"] = CreateVolume("v3", "qcow2", 1UL << 62, "", Err + "Invalid"),
        ["create volume unknown format"] = CreateVolume("v4", "vmdk", 1 << 20, "", Err + "Invalid"),
        ["create volume missing backing"] = CreateVolume("v5", "qcow2", 0, "missing", Err + "NotFound"),
        ["create volume backing in another pool"] = CreateVolume("v6", "qcow2", 0, "other", Err + "NotFound"),
        ["create raw volume with backing"] = CreateVolume("v7", "raw", 0, "base", Err + "Invalid"),
        ["create volume unknown option"] = CreateVolume("v8", "qcow2", 1 << 20, "", Err + "Invalid", new() { ["preallocation"] = VariantValue.String("full") }),
        ["create volume wrong signature"] = new(BusServerFixture.PoolPath, Pool, "CreateVolume", "ss", (ref MessageWriter w) => { w.WriteString("v9"); w.WriteString("qcow2"); }, "org.freedesktop.DBus.Error.InvalidArgs"),
        ["unknown method"] = new(BusServerFixture.PoolPath, Pool, "Explode", "", null, "org.freedesktop.DBus.Error.UnknownMethod"),
        ["method on a pool that does not exist"] = new(BusServerFixture.PoolPath + "gone", Pool, "Start", "", null, Err + "NotFound"),
        ["resize to zero"] = new(Base, Volume, "Resize", "tb", (ref MessageWriter w) => { w.WriteUInt64(0); w.WriteBool(false); }, Err + "Invalid"),
        ["resize to 2^64-1"] = new(Base, Volume, "Resize", "tb", (ref MessageWriter w) => { w.WriteUInt64(ulong.MaxValue); w.WriteBool(false); }, Err + "Invalid"),
        ["resize to 2^63"] = new(Base, Volume, "Resize", "tb", (ref MessageWriter w) => { w.WriteUInt64(1UL << 63); w.WriteBool(false); }, Err + "Invalid"),
        ["shrink without allow_shrink"] = new(Base, Volume, "Resize", "tb", (ref MessageWriter w) => { w.WriteUInt64(1 << 20); w.WriteBool(false); }, Err + "Invalid"),
        ["snapshot name with slash"] = S(Base, Volume, "CreateSnapshot", "a/b", Err + "Invalid"),
        ["snapshot name with newline"] = S(Base, Volume, "CreateSnapshot", "a\nb", Err + "Invalid"),
        ["revert to unknown snapshot"] = new(Base, Volume, "RevertToSnapshot", "sb", (ref MessageWriter w) => { w.WriteString("nope"); w.WriteBool(false); }, Err + "NotFound"),
        ["clone onto an existing name"] = Clone("rawbase", "full", "", Err + "Exists"),
        ["clone bad mode"] = Clone("c1", "deep", "", Err + "Invalid"),
        ["clone unknown format"] = Clone("c2", "full", "vmdk", Err + "Invalid"),
        ["clone target with slash"] = Clone("a/b", "full", "", Err + "Invalid"),
        ["clone target dot-dot"] = Clone("..", "linked", "", Err + "Invalid"),
        ["linked clone as raw"] = Clone("c3", "linked", "raw", Err + "Invalid"),
        ["clone from an unknown snapshot"] = CloneFrom("c4", "full", new() { ["snapshot"] = VariantValue.String("nope") }, Err + "NotFound"),
        ["linked clone from an unknown snapshot"] = CloneFrom("c5", "linked", new() { ["snapshot"] = VariantValue.String("nope") }, Err + "NotFound"),
        ["clone from a snapshot given as a number"] = CloneFrom("c6", "full", new() { ["snapshot"] = VariantValue.UInt32(1) }, Err + "Invalid"),
        ["clone from with an unknown option"] = CloneFrom("c7", "full", new() { ["at"] = VariantValue.String("s1") }, Err + "Invalid"),
        ["clone from onto an existing name"] = CloneFrom("rawbase", "full", [], Err + "Exists"),
        ["clone from wrong signature"] = new(Base, Volume, "CloneFrom", "sss", (ref MessageWriter w) => { w.WriteString("c8"); w.WriteString("full"); w.WriteString(""); }, "org.freedesktop.DBus.Error.InvalidArgs"),
        ["upload at offset 2^64-1"] = Transfer("Upload", ulong.MaxValue, 0, Err + "Invalid"),
        ["upload past the end"] = Transfer("Upload", 8 << 20, 0, Err + "Invalid"),
        ["download length past the end"] = Transfer("Download", 0, 8 << 20, Err + "Invalid"),
        ["staged upload past the end"] = new(Base, Volume, "UploadStaged", "hhtt", (ref MessageWriter w) =>
        {
            w.WriteHandle(File.OpenHandle("/dev/null"));
            w.WriteHandle(File.OpenHandle("/dev/null"));
            w.WriteUInt64(8 << 20);
            w.WriteUInt64(0);
        }, Err + "Invalid"),
        ["cancel unknown job"] = new(StorageBusServer.RootPath + "/job/999999", "org.lvstor.Storage1.Job", "Cancel", "", null, Err + "NotFound"),
        ["set a property"] = new(Base, "org.freedesktop.DBus.Properties", "Set", "ssv", (ref MessageWriter w) => { w.WriteString(Volume); w.WriteString("Capacity"); w.WriteVariantUInt64(1); }, "org.freedesktop.DBus.Error.PropertyReadOnly"),
    };

    public static TheoryData<string> CaseNames => new(Cases.Keys);

    [BusTheory]
    [MemberData(nameof(CaseNames))]
    public async Task BadArgumentsGetTheirErrorAndChangeNothing(string name)
    {
        Case c = Cases[name];
        string before = _fixture.Inventory();
        var error = await Assert.ThrowsAsync<DBusErrorReplyException>(() => _fixture.CallAsync(c.Path, c.Interface, c.Member, c.Signature.Length == 0 ? null : c.Signature, c.Args));
        Assert.True(c.Error == error.ErrorName, $"{name}: expected {c.Error}, got {error.ErrorName}: {error.ErrorMessage}");
        Assert.False(string.IsNullOrWhiteSpace(error.ErrorMessage));
        Assert.Equal(before, _fixture.Inventory());

        // The server is still there and answers.
        Assert.Contains(BusServerFixture.PoolPath, await _fixture.ListAsync(StorageBusServer.RootPath, Manager, "ListPools"));
    }
}
