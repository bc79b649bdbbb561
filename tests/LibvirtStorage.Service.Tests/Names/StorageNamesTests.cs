using LibvirtStorage.Service.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Service.Tests.Names;

public sealed class StorageNamesTests
{
    [Theory]
    [InlineData("vm1-disk0")]
    [InlineData("a")]
    [InlineData("disk.qcow2")]
    [InlineData("base_image+v2")]
    [InlineData("Überplatte")]
    [InlineData("диск")]
    [InlineData("9")]
    public void Accepts_ordinary_names(string name)
    {
        StorageNames.ValidateVolumeName("pool", name);
        StorageNames.ValidatePoolName(name);
        StorageNames.ValidateSnapshotName(name);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData(".", "starts with '.'")]
    [InlineData("..", "starts with '.'")]
    [InlineData(".hidden", "starts with '.'")]
    [InlineData("-rf", "starts with '-'")]
    [InlineData("a/b", "'/'")]
    [InlineData("/", "'/'")]
    [InlineData("a b", "a space")]
    [InlineData("a\nb", "U+000A")]
    [InlineData("a\tb", "U+0009")]
    [InlineData("a\0b", "U+0000")]
    [InlineData("nbd:host", "':'")]
    [InlineData("a\\b", "'\\'")]
    [InlineData("a\u00a0b", "U+00A0")]
    public void Refuses_bad_names_saying_why(string name, string reason)
    {
        var ex = Expect.Error(StorageErrorKind.Invalid, () => StorageNames.ValidateVolumeName("pool", name));
        Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', ex.Message);
        Expect.Error(StorageErrorKind.Invalid, () => StorageNames.ValidatePoolName(name));
    }

    [Fact]
    public void Refuses_a_lone_surrogate()
    {
        // Built at run time: a lone surrogate does not survive an attribute argument.
        string name = "a" + (char)0xD800 + "b";
        var ex = Expect.Error(StorageErrorKind.Invalid, () => StorageNames.ValidateVolumeName("pool", name));
        Assert.Contains("lone surrogate", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Socket_path_limit_is_exactly_107_bytes()
    {
        // "/run/lvstor/" + pool + "/" + volume + ".sock": 12 + 4 + 1 + n + 5 bytes.
        string longest = new('v', 107 - 12 - 4 - 1 - 5);
        StorageNames.ValidateVolumeName("pool", longest);
        Assert.Equal(107, System.Text.Encoding.UTF8.GetByteCount(StorageNames.SocketPath(StorageNames.DefaultRuntimeDirectory, "pool", longest)));
        var ex = Expect.Error(StorageErrorKind.Invalid, () => StorageNames.ValidateVolumeName("pool", longest + "v"));
        Assert.Contains("1 bytes over", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Socket_path_limit_counts_utf8_bytes_not_characters()
    {
        string twoByteLetters = new('é', (107 - 12 - 4 - 1 - 5) / 2);
        StorageNames.ValidateVolumeName("pool", twoByteLetters);
        Expect.Error(StorageErrorKind.Invalid, () => StorageNames.ValidateVolumeName("pool", twoByteLetters + "éé"));
    }

    [Fact]
    public void Pool_name_must_leave_room_for_a_volume()
    {
        string longest = new('p', 107 - 12 - 1 - 1 - 5);
        StorageNames.ValidatePoolName(longest);
        Expect.Error(StorageErrorKind.Invalid, () => StorageNames.ValidatePoolName(longest + "p"));
    }

    [Fact]
    public void Raw_bytes_must_be_utf8()
    {
        Assert.Equal("disk", StorageNames.FromUtf8("disk"u8));
        Assert.Equal("диск", StorageNames.FromUtf8("диск"u8));
        Expect.Error(StorageErrorKind.Invalid, () => StorageNames.FromUtf8([0x64, 0xff, 0x6b]));
        Expect.Error(StorageErrorKind.Invalid, () => StorageNames.FromUtf8([0xc3])); // truncated sequence
        Expect.Error(StorageErrorKind.Invalid, () => StorageNames.FromUtf8([0xed, 0xa0, 0x80])); // encoded surrogate
    }

    [Fact]
    public void Error_names_map_to_dbus_names()
    {
        Assert.Equal("org.lvstor.Storage1.Error.InUse", new StorageServiceException(StorageErrorKind.InUse, "x").DBusErrorName);
        Assert.Equal("org.lvstor.Storage1.Error.NotFound", new StorageServiceException(StorageErrorKind.NotFound, "x").DBusErrorName);
    }
}
