"""The agent: turn format, model contexts, policies and the episode loop.

actions.py            the turn/action format (single source of truth)
prompting.py          render_context: the one renderer of a model's context
policy.py             model and oracle policies behind one interface
repair.py             the one bounded repair of an unusable turn (schema skeleton + value)
episode.py            local planner -> seeker -> writer loop (offline, no Temporal)
"""
