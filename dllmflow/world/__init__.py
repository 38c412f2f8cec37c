"""Generated research worlds and what reads them.

generator.py          seeded synthetic world -> corpus + multi-hop questions (JSONL)
oracle.py             scripted oracle policy (trajectory generator, perfect baseline)
local_search.py       in-memory search/fetch with the runtime tools' result shapes
"""
