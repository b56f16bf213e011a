from raygate.cli.main import main

main()
