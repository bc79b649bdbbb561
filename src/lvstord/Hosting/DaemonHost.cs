using LibvirtStorage.Daemon.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace LibvirtStorage.Daemon.Hosting;

/// <summary>Builds and runs lvstord's generic host: logging, systemd integration and <see cref="StorageDaemon"/>.</summary>
internal static class DaemonHost
{
    /// <summary>Runs until SIGTERM/SIGINT (exit 0) or a failure; returns the process exit code.</summary>
    public static async Task<int> RunAsync(DaemonConfig config)
    {
        // No default sources: the YAML file is the only configuration, command-line and environment included.
        HostApplicationBuilder builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        // The lifetime first: AddSystemd also picks a console format, which the configured one must override.
        AddServiceManagerLifetime(builder.Services);
        ConfigureLogging(builder.Logging, config.Logging);
        builder.Services.AddSingleton(config);
        builder.Services.AddSingleton<StorageDaemon>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<StorageDaemon>());
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(60));

        using IHost host = builder.Build();
        StorageDaemon daemon = host.Services.GetRequiredService<StorageDaemon>();
        try
        {
            await host.StartAsync().ConfigureAwait(false);
        }
        catch (DaemonStartException e)
        {
            await StopQuietlyAsync(host).ConfigureAwait(false);
            host.Dispose(); // flushes the console logger before the final line
            Console.Error.WriteLine($"lvstord: {e.Message}");
            return e.ExitCode;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            await StopQuietlyAsync(host).ConfigureAwait(false);
            host.Dispose();
            Console.Error.WriteLine($"lvstord: unexpected failure while starting ({e.GetType().Name}: {e.Message}); please report it with this trace:");
            Console.Error.WriteLine(e);
            return ExitCodes.Software;
        }

        await host.WaitForShutdownAsync().ConfigureAwait(false);
        return daemon.ExitCode;
    }

    // READY=1 and STOPPING=1 go to NOTIFY_SOCKET whenever it is set, also when the parent is not systemd
    // itself (AddSystemd alone checks for that), so any supervisor speaking sd_notify sees readiness.
    private static void AddServiceManagerLifetime(IServiceCollection services)
    {
        if (SystemdHelpers.IsSystemdService())
        {
            services.AddSystemd();
        }
        else if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable("NOTIFY_SOCKET")))
        {
            services.AddSingleton<ISystemdNotifier, SystemdNotifier>();
            services.AddSingleton<IHostLifetime, SystemdLifetime>();
        }
        else
        {
            services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        }
    }

    private static void ConfigureLogging(ILoggingBuilder logging, LoggingConfig config)
    {
        logging.ClearProviders();
        logging.SetMinimumLevel(config.Level);
        // The host's own "failed to start" report would repeat, as a stack trace, the one line printed on exit.
        logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.None);
        logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        logging.AddConsole(o => o.FormatterName = config.Format switch
        {
            LogFormat.Json => ConsoleFormatterNames.Json,
            LogFormat.Simple => ConsoleFormatterNames.Simple,
            _ => ConsoleFormatterNames.Systemd,
        });
        switch (config.Format)
        {
            case LogFormat.Json:
                logging.AddJsonConsole(o =>
                {
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.UseUtcTimestamp = true;
                });
                break;
            case LogFormat.Simple:
                logging.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                    o.UseUtcTimestamp = true;
                });
                break;
            default:
                logging.AddSystemdConsole();
                break;
        }
    }

    private static async Task StopQuietlyAsync(IHost host)
    {
        try
        {
            await host.StopAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Best effort after a failed start; the start failure is what gets reported.
        }
    }
}
