using LibvirtStorage.Client;
using Spectre.Console;

namespace LibvirtStorage.Cli.Service;

/// <summary>Follows a job to its end: a progress bar on stderr when a human watches, Ctrl-C cancels the job.</summary>
internal static class JobWaiter
{
    /// <summary>Waits for the job; throws <see cref="JobInterruptedException"/> after Ctrl-C once the job has ended cancelled.</summary>
    public static async Task<JobInfo> WaitAsync(CliContext context, StorageClient client, string jobPath, bool showBar, string description)
    {
        using var interrupt = CancellationTokenSource.CreateLinkedTokenSource(context.Interrupt);
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            // The first Ctrl-C cancels the job; a second one ends lvstor at once.
            e.Cancel = !interrupt.IsCancellationRequested;
            interrupt.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            return showBar && context.IsTerminal && context.ErrorIsTerminal
                ? await WithBarAsync(client, jobPath, description, interrupt.Token).ConfigureAwait(false)
                : await client.WaitForJobAsync(jobPath, null, interrupt.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (interrupt.IsCancellationRequested)
        {
            await CancelAndWaitAsync(client, jobPath).ConfigureAwait(false);
            throw new JobInterruptedException($"interrupted: {description} cancelled");
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static async Task CancelAndWaitAsync(StorageClient client, string jobPath)
    {
        try
        {
            await client.CancelJobAsync(jobPath).ConfigureAwait(false);
        }
        catch (StorageClientException)
        {
            // It ended meanwhile (or is gone): nothing left to cancel.
        }

        try
        {
            // lvstord removes what the job made before the job ends; wait for that.
            await client.WaitForJobAsync(jobPath, null, CancellationToken.None).ConfigureAwait(false);
        }
        catch (StorageClientException)
        {
            // Cancelled (expected) or already removed.
        }
    }

    private static async Task<JobInfo> WithBarAsync(StorageClient client, string jobPath, string description, CancellationToken ct)
    {
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        JobInfo? result = null;
        await console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                ProgressTask task = ctx.AddTask(description, maxValue: 1);
                result = await client.WaitForJobAsync(jobPath, new BarProgress(task), ct).ConfigureAwait(false);
                task.Value = task.MaxValue;
            }).ConfigureAwait(false);
        return result!;
    }

    /// <summary>Sets the bar directly from the signal (Progress&lt;T&gt; would post to the thread pool and lag).</summary>
    private sealed class BarProgress(ProgressTask task) : IProgress<(ulong Done, ulong Total)>
    {
        public void Report((ulong Done, ulong Total) value)
        {
            if (value.Total > 0)
            {
                task.MaxValue = value.Total;
                task.Value = Math.Min(value.Done, value.Total);
            }
        }
    }
}
