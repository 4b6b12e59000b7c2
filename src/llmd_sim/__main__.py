from llmd_sim.cli import main

main()
