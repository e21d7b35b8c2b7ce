from loopexpose.cli import main

main()
