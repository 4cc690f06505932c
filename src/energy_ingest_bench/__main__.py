from energy_ingest_bench.cli import main

main()
