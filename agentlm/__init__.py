"""AgentLM: serve an agent-tuned LLM, run agents with tools, log what they do, retrain on it."""

import os

# A decode step streams every weight from memory, and on a virtual machine each TLB miss walks two
# page tables: backing torch's large CPU tensors with 2 MB transparent huge pages made the embedded
# engine's decode step 1.1-1.2x faster (benchmarks/serving.py; docs/architecture.md). torch reads
# this once, at its first allocation, so it is set here, before anything of ours imports torch. It
# asks (madvise) and changes nothing where huge pages are off; THP_MEM_ALLOC_ENABLE=0 opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
