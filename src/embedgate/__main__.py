from embedgate.cli import main

main()
