"""How the GPU backends split a tensor list into chunks, one program (block) each, and cache the result."""
import collections


def chunk_spans(numels, offsets, unit, chunk):
    """Yield (tensor index, local0, length) covering every element of every tensor in spans of <= chunk
    elements. Spans start on `unit` boundaries of the global index (offset + local), so the first span of a
    tensor whose offset is not a multiple of `unit` starts at a negative local0 (the kernel masks those)."""
    for t, (n, off) in enumerate(zip(numels, offsets)):
        for local0 in range((off // unit) * unit - off, n, chunk):
            yield t, local0, min(chunk, n - local0)


class TableCache:
    """A small LRU of device tables keyed on what they were built from (addresses, sizes, ids, settings)."""

    def __init__(self, size=16):
        self.size, self.entries = size, collections.OrderedDict()

    def get_or_build(self, key, build):
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = build()
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return entry

    def clear(self):
        self.entries.clear()
