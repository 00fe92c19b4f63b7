"""`python -m af2jobs.batch msa|predict --job-id ID` (see af2jobs.batch for what it does and its exit codes)."""

from af2jobs.batch import main

raise SystemExit(main())
