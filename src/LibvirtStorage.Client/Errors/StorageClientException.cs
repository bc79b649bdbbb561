namespace LibvirtStorage.Client;

/// <summary>A failed call: the D-Bus error name and lvstord's message, unchanged.</summary>
public sealed class StorageClientException : Exception
{
    /// <summary>The prefix of lvstord's own error names.</summary>
    public const string ErrorPrefix = "org.lvstor.Storage1.Error.";

    /// <summary>The name the client uses when lvstord is not on the bus.</summary>
    public const string ServiceUnavailableName = ErrorPrefix + "ServiceUnavailable";

    /// <summary>Creates the exception for a D-Bus error.</summary>
    /// <param name="errorName">The D-Bus error name, for example <c>org.lvstor.Storage1.Error.NotFound</c>.</param>
    /// <param name="message">The error message.</param>
    public StorageClientException(string errorName, string message)
        : base(message)
    {
        ErrorName = errorName;
        Kind = ParseKind(errorName);
    }

    /// <summary>Creates the exception for a D-Bus error with its cause.</summary>
    /// <param name="errorName">The D-Bus error name.</param>
    /// <param name="message">The error message.</param>
    /// <param name="inner">The underlying exception.</param>
    public StorageClientException(string errorName, string message, Exception inner)
        : base(message, inner)
    {
        ErrorName = errorName;
        Kind = ParseKind(errorName);
    }

    /// <summary>The D-Bus error name.</summary>
    public string ErrorName { get; }

    /// <summary>The kind parsed from <see cref="ErrorName"/>.</summary>
    public StorageErrorKind Kind { get; }

    /// <summary>Maps an error name to its kind: org.lvstor.Storage1.Error.&lt;Kind&gt;, the bus's AccessDenied, else Other.</summary>
    /// <param name="errorName">A D-Bus error name.</param>
    /// <returns>The kind.</returns>
    public static StorageErrorKind ParseKind(string errorName)
    {
        if (errorName == "org.freedesktop.DBus.Error.AccessDenied")
        {
            return StorageErrorKind.AccessDenied;
        }

        if (errorName.StartsWith(ErrorPrefix, StringComparison.Ordinal)
            && errorName.Length > ErrorPrefix.Length && char.IsAsciiLetter(errorName[ErrorPrefix.Length])
            && Enum.TryParse(errorName[ErrorPrefix.Length..], ignoreCase: false, out StorageErrorKind kind)
            && kind != StorageErrorKind.Other
            && Enum.IsDefined(kind))
        {
            return kind;
        }

        return StorageErrorKind.Other;
    }
}
