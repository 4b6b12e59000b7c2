from llmd_router.cli.main import main

main()
