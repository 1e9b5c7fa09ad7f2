module corio.example/bench/peers/seedgo

go 1.19
