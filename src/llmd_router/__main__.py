from llmd_router.cli import main

main()
