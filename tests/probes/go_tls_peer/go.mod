module l7scope/gotlspeer

go 1.21
