"""The pipeline core: actions, their states and events (design.md, "One core, three faces").

`base.py` has BaseAction and Pipeline (order, events, stop, resume, dumps/loads); the
actions of a fine-tune (load data, train, publish, deploy, evaluate) and the persisted run
state come with the Trainer SDK issue. The SDK face (`tuneforge.trainer`) re-exports these
under Qianfan's module names.
"""
