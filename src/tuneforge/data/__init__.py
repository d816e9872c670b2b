"""The data path: raw file -> validated canonical records -> token ids.

read.py -> formats.py -> dataset_info.py -> mix.py -> templates.py -> tokenize.py
"""
