import { watch, type FSWatcher } from 'node:fs';

/**
 * Watch a directory for changes to the files in it (renames and symlink
 * swaps included, which a watch on a file's own inode misses). The watch
 * never keeps the process alive, and closes itself when it fails, after
 * telling `onError`. Null where the directory cannot be watched: callers
 * fall back to what they do without a watch (polling, a restart).
 */
export function watchDirectory(
  dir: string,
  onEvent: (event: 'rename' | 'change', name: string | null) => void,
  onError?: (err: Error) => void,
): FSWatcher | null {
  try {
    const watcher = watch(dir, { persistent: false }, (event, name) => onEvent(event, name));
    watcher.on('error', (err: Error) => {
      watcher.close();
      onError?.(err);
    });
    return watcher;
  } catch {
    return null;
  }
}
