"""Generated fixtures, one file per dataset, in the official layouts (same names, band counts,
dtypes, CRS), tiny. Tests run the real readers over them; nothing is downloaded and no fixture
file is committed: each ``make_*`` writes into a folder it is given (a pytest ``tmp_path``).

Each file also runs as a script: ``python tests/data/m3mcr.py OUT_DIR``.
"""
