echo started
sleep 300
