"""`python -m tir_llama`: the `tir-llama` command."""

from tir_llama.cli import main

raise SystemExit(main())
