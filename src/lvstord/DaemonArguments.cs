using LibvirtStorage.Daemon.Configuration;

namespace LibvirtStorage.Daemon;

/// <summary>lvstord's command line.</summary>
internal sealed record DaemonArguments
{
    /// <summary>The usage text printed by --help and after a bad command line.</summary>
    public const string Usage = """
        Usage: lvstord [--config FILE] [--bus ADDRESS] [--state-dir DIR] [--runtime-dir DIR]
               lvstord --check-config [--config FILE] [overrides]
               lvstord --print-default-config

          --config FILE           configuration file (default /etc/lvstor/lvstord.yaml if it exists,
                                  otherwise the built-in default)
          --check-config          validate the configuration, print a summary and exit
          --print-default-config  print the built-in configuration (YAML) and exit
          --bus ADDRESS           replaces 'bus': system, session or a D-Bus address
          --state-dir DIR         replaces 'state_directory'
          --runtime-dir DIR       replaces 'runtime_directory'
          -h, --help              show this help
        """;

    /// <summary>--config, or null for the default.</summary>
    public string? ConfigFile { get; init; }

    /// <summary>--check-config.</summary>
    public bool CheckConfig { get; init; }

    /// <summary>--print-default-config.</summary>
    public bool PrintDefaultConfig { get; init; }

    /// <summary>-h/--help.</summary>
    public bool Help { get; init; }

    /// <summary>--bus, --state-dir, --runtime-dir.</summary>
    public ConfigOverrides Overrides { get; init; } = ConfigOverrides.None;

    /// <summary>Parses <paramref name="args"/>; a bad command line throws <see cref="ArgumentException"/> with a one-line message.</summary>
    public static DaemonArguments Parse(IReadOnlyList<string> args)
    {
        var result = new DaemonArguments();
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            string? inlineValue = null;
            int equals = arg.IndexOf('=', StringComparison.Ordinal);
            if (arg.StartsWith("--", StringComparison.Ordinal) && equals > 0)
            {
                inlineValue = arg[(equals + 1)..];
                arg = arg[..equals];
            }

            string Value()
            {
                if (inlineValue is not null)
                {
                    return inlineValue;
                }

                if (i + 1 >= args.Count)
                {
                    throw new ArgumentException($"{arg} needs a value");
                }

                return args[++i];
            }

            result = arg switch
            {
                "--config" => result with { ConfigFile = Value() },
                "--check-config" => result with { CheckConfig = true },
                "--print-default-config" => result with { PrintDefaultConfig = true },
                "-h" or "--help" => result with { Help = true },
                "--bus" => result with { Overrides = result.Overrides with { Bus = Bus(Value()) } },
                "--state-dir" => result with { Overrides = result.Overrides with { StateDirectory = Absolute(arg, Value()) } },
                "--runtime-dir" => result with { Overrides = result.Overrides with { RuntimeDirectory = Absolute(arg, Value()) } },
                _ => throw new ArgumentException($"unknown argument '{args[i]}'"),
            };
        }

        return result;
    }

    private static string Bus(string value) => ConfigLoader.IsBusAddress(value)
        ? value
        : throw new ArgumentException($"--bus: expected system, session or a D-Bus address such as unix:path=/run/x/bus, got \"{value}\"");

    private static string Absolute(string option, string value) => ConfigLoader.IsAbsolute(value)
        ? Path.TrimEndingDirectorySeparator(Path.GetFullPath(value))
        : throw new ArgumentException($"{option}: expected an absolute path, got \"{value}\"");
}
