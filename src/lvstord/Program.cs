using LibvirtStorage.Daemon;
using LibvirtStorage.Daemon.Configuration;
using LibvirtStorage.Daemon.Hosting;

DaemonArguments arguments;
try
{
    arguments = DaemonArguments.Parse(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"lvstord: {e.Message}");
    Console.Error.WriteLine(DaemonArguments.Usage);
    return ExitCodes.Usage;
}

if (arguments.Help)
{
    Console.WriteLine(DaemonArguments.Usage);
    return ExitCodes.Success;
}

if (arguments.PrintDefaultConfig)
{
    Console.Write(ConfigLoader.EmbeddedDefaultText);
    return ExitCodes.Success;
}

DaemonConfig config;
try
{
    config = ConfigLoader.Load(arguments.ConfigFile, arguments.Overrides);
}
catch (ConfigException e)
{
    // Before anything is opened: nothing to undo.
    Console.Error.WriteLine($"lvstord: {e.Message}");
    return ExitCodes.Config;
}

if (arguments.CheckConfig)
{
    Console.WriteLine($"{config.Source}: configuration is valid ({config.Pools.Count} pools, bus {config.Bus}, state in {config.StateDirectory})");
    return ExitCodes.Success;
}

return await DaemonHost.RunAsync(config).ConfigureAwait(false);
