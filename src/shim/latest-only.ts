/**
 * latest-only — work that only its latest request matters for (a terminal's size, a check of the
 * agent): at most one runs at a time, and requests made meanwhile collapse into one run after it.
 */

/**
 * latestOnly runs `apply` for at most one value at a time; values given meanwhile replace each other
 * and the last is applied next: a burst of requests costs two runs, in order, not one each. A run
 * that fails is forgotten (the caller's `apply` reports what it must).
 */
export function latestOnly<T>(apply: (value: T) => Promise<unknown>): (value: T) => void {
  let running = false;
  let next: { value: T } | undefined;
  const drain = async (): Promise<void> => {
    running = true;
    while (next !== undefined) {
      const { value } = next;
      next = undefined;
      await apply(value).catch(() => {});
    }
    running = false;
  };
  return (value) => {
    next = { value };
    if (!running) void drain();
  };
}
