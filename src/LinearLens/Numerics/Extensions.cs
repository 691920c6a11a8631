namespace LinearLens;

static class Extensions
{
    /// <summary>Runs an action on a value (for optional recording: trace?.Let(t => …)).</summary>
    public static void Let<TV>(this TV value, Action<TV> action) => action(value);
}
