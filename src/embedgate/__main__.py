from embedgate.cli.main import main

main()
