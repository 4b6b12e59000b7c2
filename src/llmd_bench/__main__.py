from llmd_bench.cli import main

main()
