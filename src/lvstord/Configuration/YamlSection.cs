using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace LibvirtStorage.Daemon.Configuration;

/// <summary>
/// One YAML mapping of the configuration with its key path: typed reads that fail with the file, line, column
/// and key path of the offending node. Unknown keys fail when the section is opened.
/// </summary>
internal sealed class YamlSection
{
    private readonly Dictionary<string, (YamlScalarNode Key, YamlNode Value)> _entries = new(StringComparer.Ordinal);

    private YamlSection(string source, string path, YamlNode node)
    {
        Source = source;
        Path = path;
        Node = node;
    }

    /// <summary>The file name errors start with.</summary>
    public string Source { get; }

    /// <summary>The key path of this mapping, empty for the document root.</summary>
    public string Path { get; }

    /// <summary>The mapping node (or an empty scalar standing for an empty mapping).</summary>
    public YamlNode Node { get; }

    /// <summary>Opens <paramref name="node"/> as a mapping whose keys must all be in <paramref name="knownKeys"/>.</summary>
    public static YamlSection Open(string source, string path, YamlNode node, params string[] knownKeys)
    {
        var section = new YamlSection(source, path, node);
        if (IsNull(node))
        {
            return section;
        }

        if (node is not YamlMappingNode mapping)
        {
            throw section.Error(node, path, $"expected a mapping with the keys {string.Join(", ", knownKeys)}, got {Describe(node)}");
        }

        foreach ((YamlNode keyNode, YamlNode value) in mapping.Children)
        {
            if (keyNode is not YamlScalarNode { Value: { } key } scalarKey)
            {
                throw section.Error(keyNode, path, "keys must be plain names");
            }

            string keyPath = Join(path, key);
            if (!knownKeys.Contains(key, StringComparer.Ordinal))
            {
                throw section.Error(keyNode, keyPath, $"unknown key '{key}'; {(path.Length == 0 ? "top-level" : path)} keys are {string.Join(", ", knownKeys)}");
            }

            section._entries[key] = (scalarKey, value);
        }

        return section;
    }

    /// <summary>A child mapping (an absent key gives an empty section).</summary>
    public YamlSection Section(string key, params string[] knownKeys) =>
        Open(Source, Join(Path, key), Find(key) ?? new YamlScalarNode(null) { Style = ScalarStyle.Plain }, knownKeys);

    /// <summary>The value node of <paramref name="key"/>, or null when absent or written as null.</summary>
    public YamlNode? Find(string key) => _entries.TryGetValue(key, out var entry) && !IsNull(entry.Value) ? entry.Value : null;

    /// <summary>The key node of <paramref name="key"/> (for errors about the key as a whole), or the section node.</summary>
    public YamlNode KeyNode(string key) => _entries.TryGetValue(key, out var entry) ? entry.Key : Node;

    /// <summary>The full key path of <paramref name="key"/>.</summary>
    public string PathOf(string key) => Join(Path, key);

    /// <summary>A string; absent gives <paramref name="fallback"/>.</summary>
    public string String(string key, string fallback) => Find(key) is { } node ? ScalarText(node, PathOf(key), "a string") : fallback;

    /// <summary>A required string.</summary>
    public string RequiredString(string key) =>
        Find(key) is { } node ? ScalarText(node, PathOf(key), "a string") : throw Error(Node, PathOf(key), "is required");

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>]; absent gives <paramref name="fallback"/>.</summary>
    public int Integer(string key, int min, int max, int fallback)
    {
        if (Find(key) is not { } node)
        {
            return fallback;
        }

        string expected = $"an integer from {min} to {max}";
        string text = PlainText(node, PathOf(key), expected);
        if (!int.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int value) || value < min || value > max)
        {
            throw Error(node, PathOf(key), $"expected {expected}, got \"{text}\"");
        }

        return value;
    }

    /// <summary><c>true</c> or <c>false</c>; absent gives <paramref name="fallback"/>.</summary>
    public bool Boolean(string key, bool fallback)
    {
        if (Find(key) is not { } node)
        {
            return fallback;
        }

        string text = PlainText(node, PathOf(key), "true or false");
        return text switch
        {
            "true" or "True" or "TRUE" => true,
            "false" or "False" or "FALSE" => false,
            _ => throw Error(node, PathOf(key), $"expected true or false, got \"{text}\""),
        };
    }

    /// <summary>One of <paramref name="choices"/> (lower-case names); absent gives <paramref name="fallback"/>.</summary>
    public T Choice<T>(string key, IReadOnlyDictionary<string, T> choices, T fallback)
    {
        if (Find(key) is not { } node)
        {
            return fallback;
        }

        string text = ScalarText(node, PathOf(key), "one of " + string.Join(", ", choices.Keys));
        return choices.TryGetValue(text, out T? value)
            ? value
            : throw Error(node, PathOf(key), $"expected one of {string.Join(", ", choices.Keys)}, got \"{text}\"");
    }

    /// <summary>A list of strings; absent gives <paramref name="fallback"/>.</summary>
    public IReadOnlyList<string> StringList(string key, IReadOnlyList<string> fallback)
    {
        if (Find(key) is not { } node)
        {
            return fallback;
        }

        if (node is not YamlSequenceNode sequence)
        {
            throw Error(node, PathOf(key), $"expected a list of names, got {Describe(node)}");
        }

        return sequence.Children.Select((item, i) => ScalarText(item, $"{PathOf(key)}[{i}]", "a name")).ToList();
    }

    /// <summary>The items of a list of mappings (absent: none).</summary>
    public IEnumerable<YamlSection> Sections(string key, params string[] knownKeys)
    {
        if (Find(key) is not { } node)
        {
            return [];
        }

        if (node is not YamlSequenceNode sequence)
        {
            throw Error(node, PathOf(key), $"expected a list, got {Describe(node)}");
        }

        return sequence.Children.Select((item, i) =>
            IsNull(item)
                ? throw Error(item, $"{PathOf(key)}[{i}]", $"expected a mapping with the keys {string.Join(", ", knownKeys)}, got nothing")
                : Open(Source, $"{PathOf(key)}[{i}]", item, knownKeys)).ToList();
    }

    /// <summary>The text of a scalar, quoted or not.</summary>
    public string ScalarText(YamlNode node, string path, string expected) =>
        node is YamlScalarNode { Value: { } text } && !IsNull(node) ? text : throw Error(node, path, $"expected {expected}, got {Describe(node)}");

    /// <summary>An error at <paramref name="node"/>: <c>file:line:column: path: message</c>.</summary>
    public ConfigException Error(YamlNode node, string path, string message) => At(Source, node.Start, path, message);

    /// <summary>An error at <paramref name="mark"/>.</summary>
    public static ConfigException At(string source, Mark mark, string path, string message) =>
        new(mark.Line > 0
            ? $"{source}:{mark.Line}:{mark.Column}: {(path.Length > 0 ? path + ": " : "")}{message}"
            : $"{source}: {(path.Length > 0 ? path + ": " : "")}{message}");

    // Numbers and booleans must be plain scalars: "4" in quotes is a string in YAML.
    private string PlainText(YamlNode node, string path, string expected) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: { } text }
            ? text
            : throw Error(node, path, $"expected {expected}, got {Describe(node)}");

    private static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any } scalar
        && scalar.Value is null or "" or "~" or "null" or "Null" or "NULL";

    private static string Describe(YamlNode node) => node switch
    {
        YamlMappingNode => "a mapping",
        YamlSequenceNode => "a list",
        YamlScalarNode s when IsNull(s) => "nothing",
        YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any } s => $"\"{s.Value}\"",
        YamlScalarNode s => $"the quoted string \"{s.Value}\"",
        _ => "an alias",
    };

    private static string Join(string path, string key) => path.Length == 0 ? key : path + "." + key;
}
