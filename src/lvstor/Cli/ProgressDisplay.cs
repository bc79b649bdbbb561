using Spectre.Console;

namespace LibvirtStorage.Cli;

/// <summary>Shows a Spectre.Console progress bar for a long operation, only when asked (-p) and stdout is a terminal.</summary>
internal static class ProgressDisplay
{
    public static T Run<T>(CliContext context, bool show, string description, Func<IProgress<double>?, T> work)
    {
        if (!show || !context.IsTerminal)
        {
            return work(null);
        }

        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                ProgressTask task = ctx.AddTask(description, maxValue: 1.0);
                result = work(new TaskProgress(task));
                task.Value = 1.0;
            });
        return result;
    }

    /// <summary>Sets the bar directly (Progress&lt;T&gt; would post to the thread pool and lag behind).</summary>
    private sealed class TaskProgress(ProgressTask task) : IProgress<double>
    {
        public void Report(double value) => task.Value = Math.Clamp(value, 0, 1);
    }
}
