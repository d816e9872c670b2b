"""The pipeline core: actions, their states and events (design.md, "One core, three faces").

Only the states and events exist so far; actions, pipelines and the persisted run state come
with the Trainer SDK issue. The SDK face (`tuneforge.trainer`) re-exports them under
Qianfan's module names.
"""
