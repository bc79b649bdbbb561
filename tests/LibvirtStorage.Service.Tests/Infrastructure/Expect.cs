using Xunit;

namespace LibvirtStorage.Service.Tests.Infrastructure;

public static class Expect
{
    /// <summary>Asserts that <paramref name="call"/> fails with <paramref name="kind"/> and returns the exception.</summary>
    public static StorageServiceException Error(StorageErrorKind kind, Action call)
    {
        var ex = Assert.Throws<StorageServiceException>(call);
        Assert.True(ex.Kind == kind, $"expected {kind}, got {ex.Kind}: {ex.Message}");
        return ex;
    }

    /// <inheritdoc cref="Error(StorageErrorKind, Action)"/>
    public static async Task<StorageServiceException> ErrorAsync(StorageErrorKind kind, Func<Task> call)
    {
        var ex = await Assert.ThrowsAsync<StorageServiceException>(call);
        Assert.True(ex.Kind == kind, $"expected {kind}, got {ex.Kind}: {ex.Message}");
        return ex;
    }

    /// <summary>Asserts that a failing call fails with <paramref name="kind"/> and leaves the harness's fingerprint unchanged.</summary>
    public static StorageServiceException ErrorChangingNothing(ServiceHarness harness, StorageErrorKind kind, Action call)
    {
        string before = harness.Fingerprint();
        StorageServiceException ex = Error(kind, call);
        Assert.Equal(before, harness.Fingerprint());
        return ex;
    }
}
