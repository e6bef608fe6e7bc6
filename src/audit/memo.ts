/**
 * `fn` with its results remembered, for string inputs that repeat (record
 * keys, config labels, client addresses). Bounded: when full the cache is
 * emptied and refills with what is still in use, so inputs that never repeat
 * (hostile clients cycling addresses) cannot grow it.
 */
export function boundedMemo(fn: (input: string) => string, size: number): (input: string) => string {
  const cache = new Map<string, string>();
  return (input) => {
    let output = cache.get(input);
    if (output === undefined) {
      output = fn(input);
      if (cache.size >= size) cache.clear();
      cache.set(input, output);
    }
    return output;
  };
}
